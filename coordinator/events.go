package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/subjects"
)

// consumeEvents folds every status event into its job's record, one at a
// time, through the coordinator's durable consumer: after a restart it goes
// on where it stopped.
// A failure that ends the consumer for good (it was deleted) is sent on
// fatal, so the coordinator stops rather than silently keep stale records.
func (c *Coordinator) consumeEvents(ctx context.Context, fatal chan<- error) (jetstream.ConsumeContext, error) {
	cons, err := c.js.Consumer(ctx, subjects.EventsStream, subjects.CoordinatorConsumer)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", subjects.CoordinatorConsumer, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if err := c.applyEvent(ctx, m); err != nil {
			c.log.Warn("status event not applied; will retry", "subject", m.Subject(), "err", err)
			_ = m.NakWithDelay(time.Second)
			return
		}
		_ = m.Ack()
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		switch {
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			select {
			case fatal <- fmt.Errorf("the coordinator's consumer %s is gone (a restart recreates it): %w", subjects.CoordinatorConsumer, err):
			default:
			}
		case !errors.Is(err, jetstream.ErrNoHeartbeat):
			c.log.Debug("event consumer", "err", err)
		}
	}))
	if err != nil {
		return nil, fmt.Errorf("consume status events: %w", err)
	}
	return cc, nil
}

// applyEvent checks an event against its subject and its record before
// using it: an agent may publish only under its own tag, but the event must
// also name the job of its subject and match the record's tag and owner.
// Malformed or mismatched events are logged and dropped. It returns an
// error only for a failure worth retrying.
func (c *Coordinator) applyEvent(ctx context.Context, m jetstream.Msg) error {
	subj, err := subjects.ParseEvent(m.Subject())
	if err != nil || subj.Kind != subjects.KindStatus {
		c.log.Warn("dropped event with a bad subject", "subject", m.Subject(), "err", err)
		return nil
	}
	var ev subjects.StatusEvent
	if err := json.Unmarshal(m.Data(), &ev); err != nil || ev.Job != subj.Job {
		c.log.Warn("dropped malformed status event", "subject", m.Subject(), "err", err)
		return nil
	}
	// Queued is the coordinator's own state, written straight to the record
	// (its queued events in the stream are for readers), so a queued event
	// here is either that echo or an agent's forgery: neither is worth
	// reading the record for.
	if ev.State == subjects.StateQueued {
		return nil
	}
	// No attempt past max_attempts is real but the agent's "gave up".
	rec, changed, err := c.jobs.update(ctx, subj.Job, func(r *subjects.Record) bool {
		return r.Tag == subj.Tag && r.Owner == subj.Owner &&
			(ev.Attempt <= r.MaxAttempts || ev.State == subjects.StateFailed) && r.Apply(ev)
	})
	if errors.Is(err, errNoRecord) {
		c.log.Warn("dropped status event of an unknown job", "subject", m.Subject())
		return nil
	}
	if err != nil {
		return err
	}
	if changed {
		c.log.Info("job state", "job", rec.ID, "state", rec.State, "attempt", rec.Attempt, "agent", rec.Agent)
		if rec.State.Terminal() {
			// Normally the agent's ack has removed the request already; if the
			// agent died between storing the status and acking, this keeps the
			// finished job from being delivered again.
			if err := c.dequeue(ctx, rec); err != nil {
				c.log.Warn("could not take a finished job off the queue", "job", rec.ID, "err", err)
			}
		}
	}
	// A job that has ended, or was asked to stop, and that an agent starts
	// anyway (a redelivery, a race with a stop) is told to stop.
	if ev.State == subjects.StateRunning && (rec.StopRequested || rec.State.Terminal()) {
		return c.control(&rec, subjects.StopRequest{ID: rec.ID, Force: rec.State.Terminal() && rec.State != subjects.StateStopped})
	}
	return nil
}
