package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/secrets"
	"github.com/outpost-run/outpost/subjects"
)

// ErrNoCoordinator is returned when no coordinator answers an API request.
var ErrNoCoordinator = errors.New("no coordinator answers")

// Submit asks the coordinator to run a job and returns its record.
func (c *Conn) Submit(ctx context.Context, spec subjects.JobSpec) (*subjects.Record, error) {
	r, err := c.call(ctx, subjects.VerbSubmit, spec)
	if err != nil {
		return nil, err
	}
	return r.Job, nil
}

// Get returns a job's record.
func (c *Conn) Get(ctx context.Context, id string) (*subjects.Record, error) {
	if err := subjects.ValidJobID(id); err != nil {
		return nil, err
	}
	r, err := c.call(ctx, subjects.VerbGet, subjects.GetRequest{ID: id})
	if err != nil {
		return nil, err
	}
	return r.Job, nil
}

// List returns job records, newest first.
func (c *Conn) List(ctx context.Context, req subjects.ListRequest) ([]subjects.Record, error) {
	r, err := c.call(ctx, subjects.VerbList, req)
	if err != nil {
		return nil, err
	}
	return r.Jobs, nil
}

// Stop asks for a job to be stopped and returns its record as it stands.
func (c *Conn) Stop(ctx context.Context, req subjects.StopRequest) (*subjects.Record, error) {
	if err := subjects.ValidJobID(req.ID); err != nil {
		return nil, err
	}
	r, err := c.call(ctx, subjects.VerbStop, req)
	if err != nil {
		return nil, err
	}
	return r.Job, nil
}

// call sends one API request under the caller's own name. An API error
// comes back as a *subjects.Error.
func (c *Conn) call(ctx context.Context, verb string, req any) (*subjects.Reply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if verb == subjects.VerbSubmit && len(b) > subjects.MaxSubmitBytes {
		return nil, subjects.Errorf(subjects.CodeTooLarge, "the job spec is %d bytes, at most %d are allowed (large stdin belongs in a file the job fetches)", len(b), subjects.MaxSubmitBytes)
	}
	subj := subjects.APISubject(c.Identity.Name, verb)
	ctx, stop := c.cancelOnDenial(ctx)
	defer stop()
	m, err := c.RequestWithContext(ctx, subj, b)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, fmt.Errorf("%w on %s: is it running?", ErrNoCoordinator, subj)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", verb, c.explain(err))
	}
	var r subjects.Reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("%s: malformed reply from the coordinator: %w", verb, err)
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Issue asks for a new credential (admins only). The reply's Creds is the
// creds file: the only copy of its seed.
func (c *Conn) Issue(ctx context.Context, req subjects.IssueRequest) (*subjects.Credential, string, error) {
	r, err := c.call(ctx, subjects.VerbIssue, req)
	if err != nil {
		return nil, "", err
	}
	return r.Credential, r.Creds, nil
}

// Revoke revokes a credential at once (admins only).
func (c *Conn) Revoke(ctx context.Context, name string) (*subjects.Credential, error) {
	r, err := c.call(ctx, subjects.VerbRevoke, subjects.RevokeRequest{Name: name})
	if err != nil {
		return nil, err
	}
	return r.Credential, nil
}

// Credentials lists the issued credentials (admins only).
func (c *Conn) Credentials(ctx context.Context, req subjects.CredsRequest) ([]subjects.Credential, error) {
	r, err := c.call(ctx, subjects.VerbCreds, req)
	if err != nil {
		return nil, err
	}
	return r.Credentials, nil
}

// Agents lists the online agents of a tag the caller may submit to, with
// the curve keys their heartbeats announce.
func (c *Conn) Agents(ctx context.Context, tag string) ([]subjects.AgentKey, error) {
	r, err := c.call(ctx, subjects.VerbAgents, subjects.AgentsRequest{Tag: tag})
	if err != nil {
		return nil, err
	}
	return r.Agents, nil
}

// SealSecrets seals values to the agents of tag online now, for a job
// spec's Secrets. Only they can run the job: an agent that comes later
// cannot open them.
func (c *Conn) SealSecrets(ctx context.Context, tag string, values map[string]string) (*subjects.SealedSecrets, error) {
	agents, err := c.Agents(ctx, tag)
	if err != nil {
		return nil, err
	}
	if len(agents) == 0 {
		return nil, fmt.Errorf("no agent of tag %s is online: secrets are sealed to the agents online when the job is submitted", tag)
	}
	return secrets.Seal(values, agents)
}
