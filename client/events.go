package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/subjects"
)

// ErrNoEvents is returned when a job has no events the caller may read.
var ErrNoEvents = errors.New("no events")

// Event is one item of a job's history: a status change or a run of log
// lines of one output stream.
type Event struct {
	Status *subjects.StatusEvent
	Log    *LogLines
}

// LogLines is one log message: consecutive lines of one stream.
type LogLines struct {
	Stream  string
	Attempt int
	Seq     int    // the number of the first line
	Data    []byte // whole lines, each ending in '\n'
	Partial bool   // the last line goes on in the next message
}

// Lines is how many line numbers the message covers.
func (l *LogLines) Lines() int { return max(1, bytes.Count(l.Data, []byte{'\n'})) }

// ReadOptions shape a read of a job's events.
type ReadOptions struct {
	// Follow keeps reading until the job reaches a terminal state; without
	// it the read ends with the events stored when it began.
	Follow bool
}

// ReadEvents replays a job's events from the first, in order, through a
// reader consumer the coordinator makes for the caller (pinned to its name
// and filtered to what its role may read), calling fn for each; fn's error
// ends the read. Log lines are handed over in line order even if they were
// stored out of order.
func (c *Conn) ReadEvents(ctx context.Context, job string, o ReadOptions, fn func(Event) error) error {
	if err := subjects.ValidJobID(job); err != nil {
		return err
	}
	ord := reorder{fn: fn, next: map[int]int{}, held: map[int][]*LogLines{}}
	lastAttempt := 0
	err := c.read(ctx, subjects.ReadRequest{Job: job}, o.Follow, func(m *nats.Msg) (bool, error) {
		ev, err := decodeEvent(m)
		if err != nil {
			return false, nil // not ours to show: the server only stores what the filter allows
		}
		if ev.Log != nil {
			return false, ord.add(ev.Log)
		}
		lastAttempt = max(lastAttempt, ev.Status.Attempt)
		if ev.Status.State.Terminal() || ev.Status.Attempt > ord.attempt {
			// Lines of an attempt all precede its terminal status; release any
			// held back by a gap before the status is shown.
			if err := ord.flush(); err != nil {
				return false, err
			}
		}
		if err := fn(ev); err != nil {
			return false, err
		}
		return o.Follow && ev.Status.State.Terminal() && ev.Status.Attempt >= lastAttempt, nil
	})
	if errors.Is(err, ErrNoEvents) {
		return fmt.Errorf("job %s: %w visible to %s (wrong ID, another user's job, or expired)", job, ErrNoEvents, c.Identity.Name)
	}
	if err != nil {
		return err
	}
	return ord.flush()
}

// ReadAudit replays the audit trail (admins and observers), oldest first;
// with follow it goes on with new entries until ctx ends.
func (c *Conn) ReadAudit(ctx context.Context, follow bool, fn func(subjects.AuditEntry) error) error {
	err := c.read(ctx, subjects.ReadRequest{Audit: true}, follow, func(m *nats.Msg) (bool, error) {
		var e subjects.AuditEntry
		if json.Unmarshal(m.Data, &e) != nil {
			return false, nil
		}
		return false, fn(e)
	})
	if errors.Is(err, ErrNoEvents) {
		return nil
	}
	return err
}

// Pulls of a read: large batches, and a wait long enough to be cheap while
// following and short enough to notice a cancelled context soon.
const (
	readBatch = 512
	readWait  = 5 * time.Second
)

// read asks the coordinator for a reader consumer and pulls from it from
// the first message: until the messages stored when it began are read, or,
// with follow, until each says it is the last or ctx ends. If the server
// loses the consumer (a restart: readers live in memory), read asks for
// another from the message after the last it handed over, so nothing is
// missed or shown twice. The consumer is released afterwards.
func (c *Conn) read(ctx context.Context, req subjects.ReadRequest, follow bool, each func(*nats.Msg) (last bool, err error)) error {
	var (
		rd     subjects.Reader
		puller *Puller
	)
	open := func() error {
		r, err := c.call(ctx, subjects.VerbRead, req)
		if err != nil {
			return err
		}
		if r.Reader == nil {
			return errors.New("the coordinator's read reply holds no reader")
		}
		rd = *r.Reader
		p, err := c.NewPuller(rd.Stream, rd.Consumer)
		if err != nil {
			return err
		}
		if puller != nil {
			puller.Close()
		}
		puller = p
		return nil
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = c.call(rctx, subjects.VerbRelease, subjects.ReleaseRequest{Stream: rd.Stream, Consumer: rd.Consumer})
	}
	if err := open(); err != nil {
		return err
	}
	defer func() {
		puller.Close()
		release()
	}()
	if rd.Pending == 0 && !follow {
		return ErrNoEvents
	}
	errDone := errors.New("done")
	pending, read := rd.Pending, uint64(0)
	for ctx.Err() == nil {
		wait := readWait
		if !follow {
			wait = 0
		}
		n, err := puller.Pull(ctx, readBatch, wait, func(m *nats.Msg) error {
			read++
			meta, merr := m.Metadata()
			if merr == nil {
				req.FromSeq = meta.Sequence.Stream + 1
			}
			last, err := each(m)
			if err != nil {
				return err
			}
			// Messages stored at the start may be gone (the stream's
			// limits), so a replay also ends when the consumer has no more.
			if last || (!follow && (read >= pending || (merr == nil && meta.NumPending == 0))) {
				return errDone
			}
			return nil
		})
		switch {
		case errors.Is(err, errDone):
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrConsumerGone):
			// A restarted server lost the consumer: go on from where we are.
			c.log.Warn("reader consumer lost; reading on from where it was", "consumer", rd.Consumer, "from_seq", req.FromSeq)
			release()
			if err := open(); err != nil {
				return err
			}
		case err != nil && follow && c.Denied() == nil:
			// The link may be down: try again once it is back.
			c.log.Warn("follow interrupted; resuming", "consumer", rd.Consumer, "err", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		case err != nil:
			return fmt.Errorf("read %s: %w", rd.Stream, err)
		case !follow && n < readBatch:
			return nil // nothing more for now, and a replay does not wait
		}
	}
	return ctx.Err()
}

func decodeEvent(m *nats.Msg) (Event, error) {
	e, err := subjects.ParseEvent(m.Subject)
	if err != nil {
		return Event{}, err
	}
	if e.Kind == subjects.KindStatus {
		var s subjects.StatusEvent
		if err := json.Unmarshal(m.Data, &s); err != nil {
			return Event{}, err
		}
		return Event{Status: &s}, nil
	}
	h := m.Header
	attempt, err1 := strconv.Atoi(h.Get(subjects.HeaderAttempt))
	seq, err2 := strconv.Atoi(h.Get(subjects.HeaderSeq))
	if err := errors.Join(err1, err2); err != nil {
		return Event{}, err
	}
	return Event{Log: &LogLines{Stream: h.Get(subjects.HeaderStream), Attempt: attempt, Seq: seq,
		Data: m.Data, Partial: h.Get(subjects.HeaderPartial) == "1"}}, nil
}

// reorder hands log messages over in line order per attempt. Messages
// normally arrive in order; after a publish retry one may arrive late, and
// the ones after it wait here until it does, or until the attempt ends.
type reorder struct {
	fn      func(Event) error
	attempt int
	next    map[int]int // attempt -> next line number due
	held    map[int][]*LogLines
}

func (r *reorder) add(l *LogLines) error {
	r.attempt = max(r.attempt, l.Attempt)
	due, ok := r.next[l.Attempt]
	if !ok {
		due = 1
	}
	switch {
	case l.Seq < due:
		return nil // a duplicate
	case l.Seq > due:
		r.held[l.Attempt] = append(r.held[l.Attempt], l)
		return nil
	}
	if err := r.emit(l); err != nil {
		return err
	}
	held := r.held[l.Attempt]
	slices.SortFunc(held, func(a, b *LogLines) int { return a.Seq - b.Seq })
	for len(held) > 0 && held[0].Seq <= r.next[l.Attempt] {
		if held[0].Seq == r.next[l.Attempt] {
			if err := r.emit(held[0]); err != nil {
				return err
			}
		}
		held = held[1:]
	}
	r.held[l.Attempt] = held
	return nil
}

func (r *reorder) emit(l *LogLines) error {
	r.next[l.Attempt] = l.Seq + l.Lines()
	return r.fn(Event{Log: l})
}

// flush hands over everything held, in order, gaps and all (but no
// duplicate), attempt by attempt.
func (r *reorder) flush() error {
	for _, a := range slices.Sorted(maps.Keys(r.held)) {
		held := r.held[a]
		slices.SortFunc(held, func(x, y *LogLines) int { return x.Seq - y.Seq })
		for _, l := range held {
			if next, ok := r.next[a]; ok && l.Seq < next {
				continue // a duplicate
			}
			if err := r.emit(l); err != nil {
				return err
			}
		}
		delete(r.held, a)
	}
	return nil
}
