package subjects

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// Limits on what a job spec may ask for.
const (
	// MaxSubmitBytes is the largest submit payload the coordinator accepts.
	MaxSubmitBytes = 512 << 10
	// MaxArgs is the largest number of argv entries.
	MaxArgs = 4096
	// MaxAttemptsLimit caps max_attempts.
	MaxAttemptsLimit = 100
	// DefaultMaxAttempts is used when a spec leaves max_attempts at zero.
	DefaultMaxAttempts = 3
	// MaxTimeout caps a job's run timeout.
	MaxTimeout = 7 * 24 * time.Hour
)

// Duration is a time.Duration that travels in JSON as a Go duration string
// ("90s", "1h30m"). A bare number is read as seconds, for hand-written JSON.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: want a Go duration such as \"90s\" or \"1h\"", s)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration %s: want a string such as \"90s\" or a number of seconds", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// JobSpec is what a user submits: the submit payload.
type JobSpec struct {
	// Tag names the pool of agents that may run the job.
	Tag string `json:"tag"`
	// Command is the argv to execute; no shell is involved unless it names one.
	Command []string `json:"command"`
	// Env is the job's environment, on top of PATH, HOME and OUTPOST_JOB_ID.
	Env map[string]string `json:"env,omitempty"`
	// Dir is the working directory. Relative paths are resolved inside the
	// job's own work directory, which is used when Dir is empty.
	Dir string `json:"dir,omitempty"`
	// Timeout bounds the run time; zero means no limit.
	Timeout Duration `json:"timeout,omitempty"`
	// QueueTimeout bounds the wait from submit to the first start; a job
	// no agent started in time fails. Zero means it waits as long as the
	// jobs stream keeps it.
	QueueTimeout Duration `json:"queue_timeout,omitempty"`
	// MaxAttempts bounds how many agents may try the job when the one
	// running it disappears. Zero means DefaultMaxAttempts.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Stdin is fed to the job's standard input.
	Stdin string `json:"stdin,omitempty"`
	// Limits bound the job's memory, CPU and processes; nil sets none.
	Limits *Limits `json:"limits,omitempty"`
	// Secrets are environment variables sealed to the agents of the tag
	// that were online at submit: only they can run the job.
	Secrets *SealedSecrets `json:"secrets,omitempty"`
}

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate checks a spec before anything is written, and fills in defaults.
// Its error names the field and says what would be accepted.
func (s *JobSpec) Validate() error {
	if err := ValidTag(s.Tag); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	if len(s.Command) == 0 || s.Command[0] == "" {
		return fmt.Errorf("%w: command is empty: give the program and its arguments, such as [\"echo\", \"hi\"]", ErrBadSpec)
	}
	if len(s.Command) > MaxArgs {
		return fmt.Errorf("%w: command has %d arguments, at most %d are allowed", ErrBadSpec, len(s.Command), MaxArgs)
	}
	for i, a := range s.Command {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("%w: command[%d] contains a NUL byte", ErrBadSpec, i)
		}
	}
	for k, v := range s.Env {
		if !envKeyRE.MatchString(k) {
			return fmt.Errorf("%w: env name %q must match [A-Za-z_][A-Za-z0-9_]*", ErrBadSpec, k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%w: env %s contains a NUL byte", ErrBadSpec, k)
		}
	}
	if strings.IndexByte(s.Dir, 0) >= 0 {
		return fmt.Errorf("%w: dir contains a NUL byte", ErrBadSpec)
	}
	if s.Timeout < 0 || time.Duration(s.Timeout) > MaxTimeout {
		return fmt.Errorf("%w: timeout %s must lie between 0 (none) and %s", ErrBadSpec, time.Duration(s.Timeout), MaxTimeout)
	}
	if s.QueueTimeout < 0 || time.Duration(s.QueueTimeout) > MaxTimeout {
		return fmt.Errorf("%w: queue_timeout %s must lie between 0 (none) and %s", ErrBadSpec, time.Duration(s.QueueTimeout), MaxTimeout)
	}
	if s.MaxAttempts < 0 || s.MaxAttempts > MaxAttemptsLimit {
		return fmt.Errorf("%w: max_attempts %d must lie between 1 and %d", ErrBadSpec, s.MaxAttempts, MaxAttemptsLimit)
	}
	if s.MaxAttempts == 0 {
		s.MaxAttempts = DefaultMaxAttempts
	}
	if s.Limits != nil {
		if err := s.Limits.Validate(); err != nil {
			return err
		}
		// An empty limits object asks for nothing: the same spec as none,
		// so that an agent without cgroups runs it.
		if s.Limits.Zero() {
			s.Limits = nil
		}
	}
	if s.Secrets != nil {
		if err := s.Secrets.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// ParseSpec decodes and validates a submit payload. Unknown fields are
// refused, so a typo ("comand") is an error rather than an empty job.
func ParseSpec(data []byte) (JobSpec, error) {
	var s JobSpec
	if len(data) > MaxSubmitBytes {
		return s, fmt.Errorf("%w: payload is %d bytes, at most %d are allowed", ErrBadSpec, len(data), MaxSubmitBytes)
	}
	if err := strictUnmarshal(data, &s); err != nil {
		return s, fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	return s, s.Validate()
}

func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed JSON: %w", err)
	}
	// dec.More would miss a stray '}' or ']' after the object.
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("malformed JSON: trailing data after the object")
	}
	return nil
}

// State is a job's place in its lifecycle.
type State string

// Job states. A job moves queued -> running -> one terminal state; a job
// whose agent vanished runs again as a later attempt.
const (
	StateQueued    State = "queued"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateStopped   State = "stopped"
	StateTimedOut  State = "timed_out"
)

// States lists every state, in lifecycle order.
var States = []State{StateQueued, StateRunning, StateSucceeded, StateFailed, StateStopped, StateTimedOut}

// QueueExpired reports whether a job that has never started has waited
// past its queue timeout at now.
func (j *Job) QueueExpired(now time.Time) bool {
	return j.QueueTimeout > 0 && j.Attempt == 1 && now.Sub(j.SubmittedAt) > time.Duration(j.QueueTimeout)
}

// Terminal reports whether a job in state s can never change again.
func (s State) Terminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateStopped, StateTimedOut:
		return true
	}
	return false
}

// ParseState checks a state name.
func ParseState(s string) (State, error) {
	for _, st := range States {
		if string(st) == s {
			return st, nil
		}
	}
	all := make([]string, len(States))
	for i, st := range States {
		all[i] = string(st)
	}
	return "", fmt.Errorf("unknown state %q (want one of %s)", s, strings.Join(all, ", "))
}

// Job is a job request as published on the jobs stream: the spec plus what
// the coordinator adds.
type Job struct {
	JobSpec
	ID          string    `json:"id"`
	Owner       string    `json:"owner"`
	SubmittedAt time.Time `json:"submitted_at"`
	Attempt     int       `json:"attempt"`
}

// Record is the coordinator's record of a job, as the API returns it.
type Record struct {
	Job
	State      State      `json:"state"`
	Agent      string     `json:"agent,omitempty"`
	ExitCode   *int       `json:"exit_code,omitempty"`
	Error      string     `json:"error,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// StopRequested is set when a stop was asked for a running job, so that
	// a later attempt of it is stopped too.
	StopRequested bool `json:"stop_requested,omitempty"`
	Usage
}

// StatusEvent is a job's change of state, published on its status subject.
type StatusEvent struct {
	Job      string    `json:"job"`
	State    State     `json:"state"`
	Attempt  int       `json:"attempt"`
	Agent    string    `json:"agent,omitempty"`
	ExitCode *int      `json:"exit_code,omitempty"`
	Error    string    `json:"error,omitempty"`
	At       time.Time `json:"at"`
	// Lines is how many lines the attempt's output numbered, set on the
	// terminal status of a run by agents since it was added: a follower
	// that saw fewer missed some.
	Lines *int `json:"lines,omitempty"`
	// Usage is set on the terminal status of a job that ran.
	Usage
}

// Reasons a job failed that a client may branch on, in Usage.Reason.
const (
	// ReasonOOMKilled: the kernel killed a process of the job because the
	// job reached its memory limit.
	ReasonOOMKilled = "oom_killed"
)

// Usage is what a job's run used, as its agent measured it: from the job's
// cgroup where it had one (every process it started), or else from the
// kernel's accounting of its main process and the children it waited for.
type Usage struct {
	// PeakMemoryBytes is the most memory in use at once.
	PeakMemoryBytes uint64 `json:"peak_memory_bytes,omitempty"`
	// CPUSeconds is the CPU time used, user and system.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	// Reason is a machine-readable cause of failure, such as
	// ReasonOOMKilled; Error says it for people.
	Reason string `json:"reason,omitempty"`
}

// Apply folds an event into the record, fenced by attempt: an event of an
// older attempt, or any event once the record is terminal, changes nothing.
// It reports whether the record changed.
func (r *Record) Apply(ev StatusEvent) bool {
	if r.State.Terminal() || ev.Attempt < r.Attempt || ev.Job != r.ID {
		return false
	}
	if ev.Attempt == r.Attempt && !progresses(r.State, ev.State) {
		return false
	}
	r.Attempt, r.State, r.Agent = ev.Attempt, ev.State, ev.Agent
	r.ExitCode, r.Error, r.Usage = ev.ExitCode, ev.Error, ev.Usage
	at := ev.At
	switch {
	case ev.State == StateQueued:
		r.StartedAt, r.FinishedAt = nil, nil
	case ev.State == StateRunning:
		r.StartedAt, r.FinishedAt = &at, nil
	case ev.State.Terminal():
		r.FinishedAt = &at
	}
	return true
}

// progresses reports whether, within one attempt, to follows from.
func progresses(from, to State) bool {
	switch from {
	case StateQueued:
		return to != StateQueued
	case StateRunning:
		return to.Terminal()
	}
	return false
}

// Control actions an agent obeys.
const ActionStop = "stop"

// ControlMsg is what the coordinator sends on a control subject.
type ControlMsg struct {
	Action string   `json:"action"`
	Job    string   `json:"job"`
	Force  bool     `json:"force,omitempty"`
	Grace  Duration `json:"grace,omitempty"`
}

// HeartbeatMsg is what an agent announces on its heartbeat subjects.
type HeartbeatMsg struct {
	Agent   string    `json:"agent"`
	Tags    []string  `json:"tags"`
	Slots   int       `json:"slots"`
	Running []string  `json:"running,omitempty"`
	At      time.Time `json:"at"`
	// Every is the longest the agent lets pass between its beats: it
	// beats more often while it holds a job or has news. Zero (agents
	// before it was added) means 5s.
	Every Duration `json:"every,omitempty"`
	// Lines and Bytes count the log lines and bytes this agent process has
	// published since it started.
	Lines uint64 `json:"lines"`
	Bytes uint64 `json:"bytes"`
	// Cgroups is how the agent enforces job limits: "v1" or "v2", or empty
	// when it cannot, and then NoCgroups says why; such an agent returns
	// jobs that ask for limits to the queue.
	Cgroups   string `json:"cgroups,omitempty"`
	NoCgroups string `json:"no_cgroups,omitempty"`
	// XKey is the agent's public curve key, made when it started: secrets
	// sealed to it can be opened by this agent process alone.
	XKey string `json:"xkey,omitempty"`
}

// API request payloads.
type (
	// GetRequest asks for one job's record.
	GetRequest struct {
		ID string `json:"id"`
	}
	// ListRequest asks for job records, newest first.
	ListRequest struct {
		Tag   string `json:"tag,omitempty"`
		State State  `json:"state,omitempty"`
		Owner string `json:"owner,omitempty"`
		Limit int    `json:"limit,omitempty"`
	}
	// StopRequest asks for a job to be stopped: SIGTERM to its process
	// group, then SIGKILL after Grace, or at once with Force.
	StopRequest struct {
		ID    string   `json:"id"`
		Force bool     `json:"force,omitempty"`
		Grace Duration `json:"grace,omitempty"`
	}
)

// ParseRequest decodes an API request payload strictly. An empty payload is
// an empty request.
func ParseRequest(data []byte, v any) error {
	if len(strings.TrimSpace(string(data))) == 0 {
		data = []byte("{}")
	}
	return strictUnmarshal(data, v)
}

// Reply is every API reply: exactly one of its fields is set.
type Reply struct {
	Job         *Record      `json:"job,omitempty"`
	Jobs        []Record     `json:"jobs,omitzero"`
	Credential  *Credential  `json:"credential,omitempty"`
	Credentials []Credential `json:"credentials,omitempty"`
	// Creds is a new credential's creds file: the only copy of its seed.
	Creds string `json:"creds,omitempty"`
	// Reader is the replay consumer a read request was given.
	Reader *Reader `json:"reader,omitempty"`
	// Agents are the online agents of a tag, for an agents request.
	Agents []AgentKey `json:"agents,omitzero"`
	Error  *Error     `json:"error,omitempty"`
}

// ReadRequest asks for a replay consumer: over one job's events, or, with
// Audit, over the audit trail. The coordinator sets the filter from the
// caller's role, name and tags.
type ReadRequest struct {
	Job   string `json:"job,omitempty"`
	Audit bool   `json:"audit,omitempty"`
	// FromSeq starts the consumer at this stream sequence rather than at
	// the first message: a reader whose consumer a restarted server lost
	// goes on after the last message it saw.
	FromSeq uint64 `json:"from_seq,omitempty"`
}

// Reader is a replay consumer made for one reader. Pull from it with
// $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>; it delivers from the first
// message, needs no acks, and is deleted after a minute unused or when
// released. It lives in the server's memory, so a server restart loses it:
// read again with from_seq.
type Reader struct {
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	// Pending is how many messages it held when it was made.
	Pending uint64 `json:"pending"`
}

// ReleaseRequest gives a reader consumer back. Stream is the one Reader
// named; it defaults to the events stream.
type ReleaseRequest struct {
	Stream   string `json:"stream,omitempty"`
	Consumer string `json:"consumer"`
}

// Err returns the reply's error, if any, as an error value.
func (r *Reply) Err() error {
	if r.Error != nil {
		return r.Error
	}
	return nil
}
