package subjects

import (
	"errors"
	"fmt"
)

var (
	// ErrBadToken is returned for a name, tag or job ID of the wrong shape.
	ErrBadToken = errors.New("invalid token")
	// ErrBadSubject is returned for a subject of the wrong shape.
	ErrBadSubject = errors.New("invalid subject")
	// ErrBadSpec is returned for a job spec that cannot run.
	ErrBadSpec = errors.New("invalid job spec")
)

// Code is the machine-readable kind of an API error.
type Code string

// API error codes. Clients branch on these, never on messages.
const (
	CodeBadRequest  Code = "bad_request"  // the payload does not parse or is invalid
	CodeUnknownTag  Code = "unknown_tag"  // no agent credential carries the tag
	CodeForbidden   Code = "forbidden"    // the caller's role does not allow it
	CodeNotFound    Code = "not_found"    // no such job
	CodeConflict    Code = "conflict"     // the job is in a state that forbids it
	CodeTooLarge    Code = "too_large"    // a payload over its limit
	CodeInternal    Code = "internal"     // the coordinator failed; retry later
	CodeUnknownName Code = "unknown_name" // the caller's name has no credential record
)

// Error is an API error as it travels in a reply: a code to branch on and a
// message a person can act on.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf builds an API error.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Is lets errors.Is match API errors by code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}
