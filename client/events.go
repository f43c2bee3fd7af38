package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/subjects"
)

// ErrNoSlot is returned when every reader consumer of the caller is in use.
var ErrNoSlot = errors.New("all reader slots are in use")

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
	// Tag narrows the filter; an observer must give it.
	Tag string
}

// ReadEvents replays a job's events from the first, in order, through a
// consumer pinned to the caller's name (the only kind the server lets a
// reader create), calling fn for each; fn's error ends the read. Log lines
// are handed over in line order even if they were stored out of order.
func (c *Conn) ReadEvents(ctx context.Context, job string, o ReadOptions, fn func(Event) error) error {
	if err := subjects.ValidJobID(job); err != nil {
		return err
	}
	tag, owner := "*", "*"
	if o.Tag != "" {
		if err := subjects.ValidTag(o.Tag); err != nil {
			return err
		}
		tag = o.Tag
	}
	switch c.Identity.Role {
	case accounts.RoleUser:
		owner = c.Identity.Name
	case accounts.RoleObserver:
		if tag == "*" && len(c.Identity.Tags) == 1 {
			tag = c.Identity.Tags[0]
		}
		if tag == "*" {
			return fmt.Errorf("an observer must say which tag the job has (--tag; its tags: %v)", c.Identity.Tags)
		}
	}
	ord := reorder{fn: fn, next: map[int]int{}, held: map[int][]*LogLines{}}
	lastAttempt := 0
	err := c.read(ctx, subjects.EventsStream, subjects.EventsPrefix+"."+tag+"."+owner+"."+job+".>", o.Follow, func(m jetstream.Msg) (bool, error) {
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
	err := c.read(ctx, subjects.AuditStream, subjects.AuditPrefix+".>", follow, func(m jetstream.Msg) (bool, error) {
		var e subjects.AuditEntry
		if json.Unmarshal(m.Data(), &e) != nil {
			return false, nil
		}
		return false, fn(e)
	})
	if errors.Is(err, ErrNoEvents) {
		return nil
	}
	return err
}

// read runs a pinned reader consumer over stream, filtered, from the first
// message: until the messages stored when it began are read, or, with
// follow, until each says it is the last or ctx ends. The consumer is
// deleted afterwards.
func (c *Conn) read(ctx context.Context, stream, filter string, follow bool, each func(jetstream.Msg) (last bool, err error)) error {
	cur := &cursor{c: c, stream: stream, filter: filter}
	if err := cur.open(ctx); err != nil {
		return err
	}
	defer cur.close(ctx)
	pending := cur.cons.CachedInfo().NumPending
	if pending == 0 && !follow {
		return ErrNoEvents
	}
	defer cur.watch(ctx)()
	for read := uint64(0); follow || read < pending; read++ {
		m, err := cur.next(ctx)
		if err != nil {
			return err
		}
		last, err := each(m)
		if err != nil || last {
			return err
		}
		// Messages stored at the start may be gone (the stream's limits), so
		// a replay also ends when the consumer has nothing more.
		if meta, merr := m.Metadata(); !follow && merr == nil && meta.NumPending == 0 {
			return nil
		}
	}
	return nil
}

// cursor is a read's place in a stream, kept by a pinned reader consumer.
//
// Reader consumers live in the server's memory: one made on disk costs its
// reader milliseconds, and holds up the stream's writers meanwhile. A
// restarted server has lost them, so after every reconnect the cursor
// checks its consumer and, if it is gone, makes it again from the message
// after the last it handed over: nothing is missed or shown twice.
type cursor struct {
	c              *Conn
	stream, filter string
	last           uint64 // stream sequence of the last message handed over

	mu   sync.Mutex
	name string
	cons jetstream.Consumer
	it   jetstream.MessagesContext
	lost bool // the server no longer has the consumer
}

// open makes the reader consumer, from the message after the last handed
// over, and starts pulling from it.
func (r *cursor) open(ctx context.Context) error {
	cons, name, err := r.c.readerConsumer(ctx, r.stream, r.filter, r.last+1)
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		r.remove(ctx, name)
		return fmt.Errorf("read %s: %w", r.stream, err)
	}
	r.mu.Lock()
	r.name, r.cons, r.it, r.lost = name, cons, it, false
	r.mu.Unlock()
	return nil
}

// next returns the next message, making the consumer again if the server
// lost it.
func (r *cursor) next(ctx context.Context) (jetstream.Msg, error) {
	for {
		r.mu.Lock()
		it := r.it
		r.mu.Unlock()
		m, err := it.Next()
		if err == nil {
			if meta, merr := m.Metadata(); merr == nil {
				r.last = meta.Sequence.Stream
			}
			return m, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.mu.Lock()
		lost := r.lost || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted)
		r.mu.Unlock()
		if !lost {
			return nil, fmt.Errorf("read %s: %w", r.stream, r.c.explain(err))
		}
		if err := r.open(ctx); err != nil {
			return nil, err
		}
	}
}

// watch stops the pulls when ctx ends, and after every reconnect looks
// for the consumer: if the server lost it, the pulls stop and next makes
// it again. The returned func ends the watch.
func (r *cursor) watch(ctx context.Context) func() {
	reconnected := r.c.StatusChanged(nats.CONNECTED)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ctx.Done():
				r.stop(false)
				return
			case <-done:
				return
			case <-reconnected:
				if r.gone(ctx) {
					r.stop(true)
				}
			}
		}
	}()
	return func() {
		close(done)
		r.c.RemoveStatusListener(reconnected)
	}
}

// gone reports whether the server has lost the consumer, asking until it
// can tell or ctx ends.
func (r *cursor) gone(ctx context.Context) bool {
	r.mu.Lock()
	cons := r.cons
	r.mu.Unlock()
	for ctx.Err() == nil {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cons.Info(ictx)
		cancel()
		switch {
		case err == nil:
			return false
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			return true
		}
		// A restarted server's JetStream may not answer yet.
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	return false
}

func (r *cursor) stop(lost bool) {
	r.mu.Lock()
	r.lost = r.lost || lost
	it := r.it
	r.mu.Unlock()
	it.Stop()
}

// close stops the pulls and deletes the consumer.
func (r *cursor) close(ctx context.Context) {
	r.stop(false)
	r.mu.Lock()
	name := r.name
	r.mu.Unlock()
	r.remove(ctx, name)
}

func (r *cursor) remove(ctx context.Context, name string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = r.c.JS.DeleteConsumer(dctx, r.stream, name)
}

// readerConsumer creates an ephemeral-like consumer in the first free slot
// of the caller's pinned names, from stream sequence from on. It removes
// itself when idle, so a reader that crashed frees its slot.
func (c *Conn) readerConsumer(ctx context.Context, stream, filter string, from uint64) (jetstream.Consumer, string, error) {
	cfg := jetstream.ConsumerConfig{
		FilterSubject: filter,
		AckPolicy:     jetstream.AckNonePolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// In memory: see cursor.
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	for slot := 1; slot <= subjects.ReaderSlots; slot++ {
		cfg.Name = subjects.ReaderConsumer(c.Identity.Name, slot)
		// Unique, so that the server refuses to hand a slot in use to a
		// second read of the same job (it returns an existing consumer whose
		// config is equal): the reads would split the events.
		cfg.Description = "outpost reader " + rand.Text()
		cctx, stop := c.cancelOnDenial(ctx)
		cctx, cancel := context.WithTimeout(cctx, 5*time.Second)
		cons, err := c.JS.CreateConsumer(cctx, stream, cfg)
		cancel()
		stop()
		switch {
		case err == nil:
			return cons, cfg.Name, nil
		case errors.Is(err, jetstream.ErrConsumerExists), errors.Is(err, jetstream.ErrConsumerNameAlreadyInUse):
			continue
		case ctx.Err() != nil:
			return nil, "", ctx.Err()
		default:
			return nil, "", fmt.Errorf("create reader consumer %s: %w", cfg.Name, c.explain(err))
		}
	}
	return nil, "", fmt.Errorf("%w (%d): close another 'outpost logs', or wait a minute for an abandoned one to expire", ErrNoSlot, subjects.ReaderSlots)
}

func decodeEvent(m jetstream.Msg) (Event, error) {
	e, err := subjects.ParseEvent(m.Subject())
	if err != nil {
		return Event{}, err
	}
	if e.Kind == subjects.KindStatus {
		var s subjects.StatusEvent
		if err := json.Unmarshal(m.Data(), &s); err != nil {
			return Event{}, err
		}
		return Event{Status: &s}, nil
	}
	h := m.Headers()
	attempt, err1 := strconv.Atoi(h.Get(subjects.HeaderAttempt))
	seq, err2 := strconv.Atoi(h.Get(subjects.HeaderSeq))
	if err := errors.Join(err1, err2); err != nil {
		return Event{}, err
	}
	return Event{Log: &LogLines{Stream: h.Get(subjects.HeaderStream), Attempt: attempt, Seq: seq,
		Data: m.Data(), Partial: h.Get(subjects.HeaderPartial) == "1"}}, nil
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
