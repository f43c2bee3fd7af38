package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/subjects"
)

// issueFor turns an API issue request into a credential.
func (c *Coordinator) issueFor(ctx context.Context, req subjects.IssueRequest) (accounts.Credential, error) {
	role, err := accounts.ParseRole(req.Role)
	if err == nil && role == accounts.RoleCoordinator {
		err = fmt.Errorf("the coordinator role cannot be issued through the API")
	}
	if err != nil {
		return accounts.Credential{}, subjects.Errorf(subjects.CodeBadRequest, "%v", err)
	}
	ar := accounts.Request{Name: req.Name, Role: role, Tags: req.Tags, Expires: time.Duration(req.Expires), Leaf: req.Leaf}
	if err := ar.Validate(); err != nil {
		return accounts.Credential{}, subjects.Errorf(subjects.CodeBadRequest, "%v", err)
	}
	cred, err := c.Issue(ctx, ar)
	if errors.Is(err, errNameTaken) {
		return cred, subjects.Errorf(subjects.CodeConflict, "%v", err)
	}
	return cred, err
}

// Revoke revokes the named credential: its key joins the account JWT's
// revocations, the new JWT is pushed to the servers (which close its live
// connection and refuse it from then on), and an agent's unfinished jobs go
// back to the queue for another agent of the tag.
func (c *Coordinator) Revoke(ctx context.Context, name string) (subjects.Credential, error) {
	if err := subjects.ValidName(name); err != nil {
		return subjects.Credential{}, subjects.Errorf(subjects.CodeBadRequest, "%v", err)
	}
	cred, err := c.creds.get(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return cred, subjects.Errorf(subjects.CodeNotFound, "no credential named %q (see 'outpost admin ls')", name)
	case err != nil:
		return cred, err
	case cred.Role == string(accounts.RoleCoordinator):
		return cred, subjects.Errorf(subjects.CodeForbidden, "the coordinator's own credential cannot be revoked through the API")
	case cred.RevokedAt != nil:
		return cred, subjects.Errorf(subjects.CodeConflict, "credential %q was already revoked at %s", name, cred.RevokedAt.Format(time.RFC3339))
	}
	if c.sys == nil {
		return cred, fmt.Errorf("revocation needs a system-account connection, which this coordinator lacks")
	}
	tok, err := c.auth.Revoke(cred)
	if err != nil {
		return cred, err
	}
	if err := pushAccount(ctx, c.sys, cred.Account, tok); err != nil {
		return cred, err
	}
	now := time.Now().UTC()
	cred, err = c.creds.update(ctx, name, func(cr *subjects.Credential) error {
		cr.RevokedAt = &now
		return nil
	})
	if err != nil {
		return cred, err
	}
	c.m.revoked.WithLabelValues(cred.Role).Inc()
	c.log.Info("credential revoked", "name", name, "role", cred.Role, "public_key", cred.PublicKey)
	if cred.Role == string(accounts.RoleAgent) {
		// The requeue must not stop halfway when the revoke call's deadline
		// passes: a job taken off the queue must be put back.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		c.requeueAgentJobs(rctx, name, "its agent "+name+" was revoked")
	}
	return cred, nil
}

// requeueAgentJobs sends every job the agent is running back to the queue
// as a new attempt, at once rather than after the ack wait.
func (c *Coordinator) requeueAgentJobs(ctx context.Context, agent, reason string) {
	recs, err := c.jobs.list(ctx, func(r *subjects.Record) bool {
		return r.Agent == agent && r.State == subjects.StateRunning
	}, maxList)
	if err != nil {
		c.log.Error("could not list the jobs of a revoked agent; they run again after the ack wait", "agent", agent, "err", err)
		return
	}
	for _, rec := range recs {
		if err := c.requeue(ctx, rec, reason); err != nil {
			c.log.Error("could not requeue job; it runs again after the ack wait", "job", rec.ID, "err", err)
		}
	}
}

// requeue makes attempt+1 of a job: the record goes back to queued (so
// anything the old attempt still sends is fenced off), the old request
// leaves the queue and a new one, carrying the new attempt, takes its place.
// A job whose attempts are spent fails instead.
func (c *Coordinator) requeue(ctx context.Context, rec subjects.Record, reason string) error {
	next := rec.Attempt + 1
	ev := subjects.StatusEvent{Job: rec.ID, State: subjects.StateQueued, Attempt: next, Error: reason, At: time.Now().UTC()}
	if next > rec.MaxAttempts {
		ev.State, ev.Attempt = subjects.StateFailed, rec.Attempt
		ev.Error = fmt.Sprintf("%s, and its %d attempts are spent", reason, rec.MaxAttempts)
	}
	updated, changed, err := c.jobs.update(ctx, rec.ID, func(r *subjects.Record) bool {
		return r.Attempt == rec.Attempt && r.Apply(ev)
	})
	if err != nil || !changed {
		return err
	}
	if err := c.dequeue(ctx, rec); err != nil {
		return err
	}
	if err := c.publishStatus(ctx, updated, ev); err != nil {
		return err
	}
	if ev.State == subjects.StateQueued {
		if err := c.publishJob(ctx, updated.Job); err != nil {
			return err
		}
	}
	c.log.Info("job requeued", "job", rec.ID, "attempt", next, "reason", reason)
	return nil
}
