package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/outpost-run/outpost/subjects"
)

// holdRunning is how long a job's running status waits for the job's end
// before it is written to the record alone. A job that ends within it (a
// trivial job ends a millisecond or two after it starts) has its running
// and its end written in one change of its record, not two. Readers of a
// job's progress follow its events, which this does not delay; the record
// lags its events by at most this much more.
const holdRunning = 20 * time.Millisecond

// A status event of a job without a record is tried again, unknownRetry
// apart, until unknownWait after the job's submit (its ID's time): the
// record may be stored after the request, by a server slow just then.
const (
	unknownWait  = 30 * time.Second
	unknownRetry = 200 * time.Millisecond
)

// submittedWithin reports whether job id was submitted less than d ago,
// by the time its ULID carries.
func submittedWithin(id string, d time.Duration) bool {
	u, err := ulid.ParseStrict(strings.ToUpper(id))
	return err == nil && time.Since(ulid.Time(u.Time())) < d
}

// eventQueue is how many delivered events wait for the folding at most;
// past it the consumer's delivery waits.
const eventQueue = 1024

// consumeEvents folds every status event into its job's record through the
// coordinator's durable consumer: after a restart it goes on where it
// stopped. A failure that ends the consumer for good (it was deleted) is
// sent on fatal, so the coordinator stops rather than silently keep stale
// records. The returned func stops it.
func (c *Coordinator) consumeEvents(ctx context.Context, fatal chan<- error) (func(), error) {
	cons, err := c.js.Consumer(ctx, subjects.EventsStream, subjects.CoordinatorConsumer)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", subjects.CoordinatorConsumer, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	in := make(chan jetstream.Msg, eventQueue)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case in <- m:
		case <-ctx.Done():
		}
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
		cancel()
		return nil, fmt.Errorf("consume status events: %w", err)
	}
	folded := make(chan struct{})
	go func() { defer close(folded); c.foldEvents(ctx, in) }()
	return func() {
		cc.Stop()
		cancel()
		<-folded
	}, nil
}

// event is a status event delivered to the coordinator, checked against
// its subject.
type event struct {
	m    jetstream.Msg
	subj subjects.Event
	ev   subjects.StatusEvent
}

// foldEvents applies the events from in to the records until ctx ends.
// Events of one job are applied in the order they came; a running status
// is held back for holdRunning, or until another event of its job comes,
// and applied together with it.
func (c *Coordinator) foldEvents(ctx context.Context, in <-chan jetstream.Msg) {
	held := map[string][]event{}
	due := map[string]time.Time{}
	apply := func(id string) {
		c.applyEvents(ctx, held[id])
		delete(held, id)
		delete(due, id)
	}
	// The timer runs only while a running status is held.
	t := time.NewTimer(holdRunning)
	t.Stop()
	var wake <-chan time.Time
	for {
		select {
		case m := <-in:
			e, ok := c.checkEvent(m)
			if !ok {
				_ = m.Ack()
				continue
			}
			id := e.subj.Job
			held[id] = append(held[id], e)
			if e.ev.State != subjects.StateRunning {
				apply(id)
				continue
			}
			if _, waiting := due[id]; !waiting {
				due[id] = time.Now().Add(holdRunning)
			}
			if wake == nil {
				t.Reset(holdRunning)
				wake = t.C
			}
		case now := <-wake:
			wake = nil
			next := now.Add(holdRunning)
			for id, at := range due {
				if !at.After(now) {
					apply(id)
				} else if at.Before(next) {
					next = at
				}
			}
			if len(due) > 0 {
				t.Reset(next.Sub(now))
				wake = t.C
			}
		case <-ctx.Done():
			return
		}
	}
}

// checkEvent parses a status event and checks it against its subject: an
// agent may publish only under its own tag, but the event must also name
// the job of its subject (its record's tag and owner are checked when it
// is applied). It reports false for an event to drop: malformed, or
// queued. Queued is the coordinator's own state, written straight to the
// record (its queued events in the stream are for readers), so a queued
// event here is either that echo or an agent's forgery.
func (c *Coordinator) checkEvent(m jetstream.Msg) (event, bool) {
	subj, err := subjects.ParseEvent(m.Subject())
	if err != nil || subj.Kind != subjects.KindStatus {
		c.log.Warn("dropped event with a bad subject", "subject", m.Subject(), "err", err)
		return event{}, false
	}
	var ev subjects.StatusEvent
	if err := json.Unmarshal(m.Data(), &ev); err != nil || ev.Job != subj.Job {
		c.log.Warn("dropped malformed status event", "subject", m.Subject(), "err", err)
		return event{}, false
	}
	return event{m: m, subj: subj, ev: ev}, ev.State != subjects.StateQueued
}

// applyEvents folds events of one job into its record, in one change, and
// acks them; if the record cannot be written, or is not there (yet), they
// are delivered again later. An event that does not match its record
// (another tag or owner, an attempt past max_attempts other than the
// agent's "gave up", an older attempt, a record that ended) changes
// nothing.
func (c *Coordinator) applyEvents(ctx context.Context, events []event) {
	id := events[0].subj.Job
	// after[i] is the record once events[i] was applied, as if each event
	// were applied alone.
	after := make([]subjects.Record, len(events))
	rec, changed, err := c.jobs.update(ctx, id, func(r *subjects.Record) bool {
		any := false
		for i, e := range events {
			if r.Tag == e.subj.Tag && r.Owner == e.subj.Owner &&
				(e.ev.Attempt <= r.MaxAttempts || e.ev.State == subjects.StateFailed) && r.Apply(e.ev) {
				any = true
			}
			after[i] = *r
		}
		return any
	})
	switch {
	case errors.Is(err, errNoRecord):
		// Its record may be on its way (see queue): try again for a while.
		for _, e := range events {
			if submittedWithin(id, unknownWait) {
				_ = e.m.NakWithDelay(unknownRetry)
				continue
			}
			c.log.Warn("dropped status event of an unknown job", "subject", e.m.Subject())
			_ = e.m.Ack()
		}
		return
	case err != nil:
		c.log.Warn("status event not applied; will retry", "subject", events[0].m.Subject(), "err", err)
		for _, e := range events {
			_ = e.m.NakWithDelay(time.Second)
		}
		return
	case changed:
		c.log.Info("job state", "job", rec.ID, "state", rec.State, "attempt", rec.Attempt, "agent", rec.Agent)
		if rec.State.Terminal() {
			// Normally the agent's ack has removed the request already; if the
			// agent died between storing the status and acking, this keeps the
			// finished job from being delivered again.
			c.left.add(rec)
		}
	}
	for i, e := range events {
		// A job that has ended, or was asked to stop, and that an agent
		// starts anyway (a redelivery, a race with a stop) is told to stop.
		if r := after[i]; e.ev.State == subjects.StateRunning && (r.StopRequested || r.State.Terminal()) {
			if err := c.control(&r, subjects.StopRequest{ID: r.ID, Force: r.State.Terminal() && r.State != subjects.StateStopped}); err != nil {
				c.log.Warn("could not stop a job that should not run; will retry", "job", r.ID, "err", err)
				_ = e.m.NakWithDelay(time.Second)
				continue
			}
		}
		_ = e.m.Ack()
	}
}
