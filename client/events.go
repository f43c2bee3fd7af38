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
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
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
// stored out of order. With Follow, once what is stored was replayed, the
// rest comes live, as in Run, and the reader consumer is let go: a follow
// holds one of the caller's reader slots only while it replays.
func (c *Conn) ReadEvents(ctx context.Context, job string, o ReadOptions, fn func(Event) error) error {
	if err := subjects.ValidJobID(job); err != nil {
		return err
	}
	f := newFollower(o.Follow, fn)
	if err := c.readEvents(ctx, job, f); err != nil {
		return err
	}
	// Lines a gap held back go out at the end, gaps and all.
	return f.ord.flush()
}

// readEvents is ReadEvents, but for the lines held back at its end.
func (c *Conn) readEvents(ctx context.Context, job string, f *follower) error {
	// A follow replays what is stored, then hears the job's live events
	// (the stored ones' subjects name its tag and owner), replays once more
	// what came in between, and goes on live: a reader slot is held only
	// while it replays.
	if err := c.replay(ctx, job, 0, false, false, f); err != nil || !f.follow || f.ended {
		return err
	}
	if !c.hears(f.tag, f.owner) {
		return c.replayFollow(ctx, job, f)
	}
	run, err := c.live.join(c, f.tag, f.owner)
	if err != nil {
		return c.replayFollow(ctx, job, f)
	}
	c.live.claim(run, job)
	defer c.live.leave(run, job)
	// What was stored between the replay's start and the server taking
	// the subscription (a flush), neither saw: the live follow starts with
	// a catch-up from the last event read. A reconnect that fails the flush
	// is caught up on as well.
	if err := c.FlushTimeout(askTimeout); err != nil && c.IsClosed() {
		return fmt.Errorf("follow job %s: %w", job, err)
	}
	return c.followLive(ctx, job, run, f, f.last+1)
}

// replayFollow follows the rest of a job through its reader alone, from
// the event after the last f had: for a follow that cannot hear the job
// live.
func (c *Conn) replayFollow(ctx context.Context, job string, f *follower) error {
	if err := c.replay(ctx, job, f.last+1, true, false, f); err != nil && !errors.Is(err, ErrNoEvents) {
		return err
	}
	return nil
}

// replay hands f a job's stored events from stream sequence from (0: the
// first), through a reader consumer: those stored when it began, or with
// follow, until f says the job ended. Lines held back by a gap stay held.
// A replay that resumes a follow (resume) waits for a coordinator that is
// away (restarting), and for a free reader slot.
func (c *Conn) replay(ctx context.Context, job string, from uint64, follow, resume bool, f *follower) error {
	err := c.read(ctx, subjects.ReadRequest{Job: job, FromSeq: from}, follow, resume, func(m *nats.Msg) (bool, error) {
		e, err := subjects.ParseEvent(m.Subject)
		if err != nil {
			return false, nil
		}
		f.tag, f.owner = e.Tag, e.Owner
		ev, err := decodeEvent(m, e.Kind)
		if err != nil {
			return false, nil // not ours to show: the server only stores what the filter allows
		}
		var seq uint64
		if meta, err := m.Metadata(); err == nil {
			seq = meta.Sequence.Stream
		}
		err = f.event(ev, seq)
		return f.ended, err
	})
	if errors.Is(err, ErrNoEvents) {
		return fmt.Errorf("job %s: %w visible to %s (wrong ID, another user's job, or expired)", job, ErrNoEvents, c.Identity.Name)
	}
	return err
}

// RunOptions shape a Run.
type RunOptions struct {
	// SubmitTimeout bounds the submit alone; zero leaves it to ctx.
	SubmitTimeout time.Duration
}

// Bounds of a Run's live follow: how many live events it holds before it
// drops one (and then catches up to make up for it), and how long the job
// may be quiet before Run looks at its record, at first and at most.
const (
	liveQueue    = 4096
	liveQuiet    = 5 * time.Second
	liveQuietMax = time.Minute
)

// Run submits a job and hands fn its events from the first until the job
// ends, as Submit and then ReadEvents with Follow do, but without a reader
// consumer while nothing is missed: it hears the caller's live events of
// the tag from before it submits (through a subscription the connection's
// Runs share, see liveMux), so it sees every event of the job as it is
// stored. Live delivery is at most once, so Run checks what it saw: if a message
// was dropped, the connection was lost, lines have a gap, or the terminal
// status does not count as many lines as came (or counts none: an older
// agent, or a job that never ran), it catches up: it replays what is
// stored of the job through a reader, handing over only what fn has not
// had, and goes on live. The record is returned once the job is queued,
// even when following it then fails.
func (c *Conn) Run(ctx context.Context, spec subjects.JobSpec, o RunOptions, fn func(Event) error) (*subjects.Record, error) {
	submit := func() (*subjects.Record, error) {
		sctx := ctx
		if o.SubmitTimeout > 0 {
			var cancel context.CancelFunc
			sctx, cancel = context.WithTimeout(ctx, o.SubmitTimeout)
			defer cancel()
		}
		return c.Submit(sctx, spec)
	}
	f := newFollower(true, fn)
	if !c.hears(spec.Tag, c.Identity.Name) {
		// The coordinator refuses the submit, and says why better than a
		// denied subscription would.
		rec, err := submit()
		if err != nil {
			return nil, err
		}
		if err := c.replay(ctx, rec.ID, 0, true, false, f); err != nil {
			return rec, err
		}
		return rec, f.ord.flush()
	}
	run, err := c.live.join(c, spec.Tag, c.Identity.Name)
	if err != nil {
		return nil, err
	}
	rec, err := submit()
	var job string
	if err == nil {
		job = rec.ID
	}
	c.live.claim(run, job)
	defer c.live.leave(run, job)
	if err != nil {
		return nil, err
	}
	return rec, c.followLive(ctx, rec.ID, run, f, 0)
}

// followLive hands f the job's events that run hears, until f says the
// job ended, catching up from the stream whenever one may have been
// missed (see Run). With from, it first catches up from that stream
// sequence: f has the events before it.
func (c *Conn) followLive(ctx context.Context, job string, run *liveRun, f *follower, from uint64) error {
	dropped := func() int {
		n, _ := run.lt.sub.Dropped()
		return n
	}
	// What was lost before a catch-up, the catch-up made up for.
	base := struct {
		reconnects uint64
		dropped    int
	}{run.reconnects, run.dropped}
	missed := func() bool {
		return run.lost.Load() || c.IsClosed() || c.Stats().Reconnects != base.reconnects || dropped() > base.dropped
	}
	// clean is the stream sequence up to which every event of the job
	// came: a loss this connection saw (a drop, a reconnect) came later, so
	// its catch-up starts after it. A gap in the lines, or an end that does
	// not add up, may come of a loss it did not see, anywhere: those catch
	// up from the first event.
	var clean uint64
	// catchUp hands over what is stored of the job from stream sequence
	// from (0: the first) and was not handed over, through a reader, and
	// the follow goes on live. It replays up to now, not to the job's end:
	// a caller has four reader slots, and a server restart sends every run
	// of its caller to catch up at once.
	catchUp := func(from uint64) error {
		run.lost.Store(false)
		base.reconnects, base.dropped = c.Stats().Reconnects, max(dropped(), base.dropped)
		if err := c.replay(ctx, job, from, false, true, f); err != nil && !errors.Is(err, ErrNoEvents) {
			return err
		}
		if !f.gap() {
			clean = max(clean, f.last)
		}
		return nil
	}
	if from > 0 {
		if err := catchUp(from); err != nil {
			return err
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	heard, quiet := time.Now(), liveQuiet // the last live event (or look at the record), and the wait for the next look
	gapped := 0                           // ticks a gap in the lines has lasted
	for !f.ended {
		select {
		case le := <-run.msgs:
			m := le.m
			heard, quiet = time.Now(), liveQuiet
			ev, err := decodeEvent(m, le.kind)
			if err != nil {
				continue
			}
			if ev.Status != nil {
				from, catch := uint64(0), true
				switch {
				case f.gap(), ev.Status.State.Terminal() && !f.complete(ev.Status):
				case missed():
					from = clean + 1
				default:
					catch = false
				}
				// The status is stored, so the catch-up hands it over, in
				// its place; below it is then a duplicate.
				if catch {
					if err := catchUp(from); err != nil || f.ended {
						return err
					}
				}
			}
			seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
			if err := f.event(ev, seq); err != nil {
				return err
			}
		case <-tick.C:
			if f.gap() {
				gapped++
			} else {
				gapped = 0
			}
			switch {
			case missed():
				if err := catchUp(clean + 1); err != nil {
					return err
				}
				continue
			case gapped >= 2:
				// Lines held for a missing one: a status would call for a
				// catch-up, but a long job may print for hours before one.
				if err := catchUp(0); err != nil {
					return err
				}
				continue
			case gapped == 0:
				clean = f.last
			}
			// A loss this connection cannot see (between servers of a
			// cluster, say) must not leave the follow waiting for an end
			// that came: a quiet job's record says whether it ended. The
			// looks back off, as each costs an API call and an audit entry.
			if time.Since(heard) >= quiet {
				heard, quiet = time.Now(), min(2*quiet, liveQuietMax)
				if c.Identity.Role == accounts.RoleObserver {
					// Observers may not read records; a lost end is
					// the last event, after the clean ones.
					if err := catchUp(clean + 1); err != nil {
						return err
					}
					continue
				}
				gctx, cancel := context.WithTimeout(ctx, askTimeout)
				r, err := c.Get(gctx, job)
				cancel()
				if err == nil && r.State.Terminal() {
					if err := catchUp(0); err != nil {
						return err
					}
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// hears says whether this credential may subscribe to the live events of
// tag and owner: an admin's reach is every tag, an observer's its tags,
// a user's its own jobs of its tags.
func (c *Conn) hears(tag, owner string) bool {
	switch c.Identity.Role {
	case accounts.RoleAdmin:
		return true
	case accounts.RoleObserver:
		return slices.Contains(c.Identity.Tags, tag)
	case accounts.RoleUser:
		return owner == c.Identity.Name && slices.Contains(c.Identity.Tags, tag)
	}
	return false
}

// follower hands a job's events to fn once each, and in order, whether
// they come from a replay, live, or from both: lines in line order per
// attempt, each status once (by its stream sequence).
type follower struct {
	fn          func(Event) error
	ord         reorder
	statuses    map[uint64]bool // stream sequences of the statuses handed over
	lastAttempt int
	follow      bool   // a terminal status of the last attempt ends it
	ended       bool   // and was handed over
	last        uint64 // the highest stream sequence of an event handed over or held
	// tag and owner are those of the job, as a replay's events name them.
	tag, owner string
}

func newFollower(follow bool, fn func(Event) error) *follower {
	return &follower{fn: fn, follow: follow, statuses: map[uint64]bool{},
		ord: reorder{fn: fn, next: map[int]int{}, held: map[int][]*LogLines{}}}
}

// event hands over ev, stored at stream sequence seq (zero if unknown);
// f.ended says whether it ended the follow.
func (f *follower) event(ev Event, seq uint64) error {
	f.last = max(f.last, seq)
	if ev.Log != nil {
		return f.ord.add(ev.Log)
	}
	s := ev.Status
	if seq != 0 {
		if f.statuses[seq] {
			return nil
		}
		f.statuses[seq] = true
	}
	f.lastAttempt = max(f.lastAttempt, s.Attempt)
	if s.State.Terminal() || s.Attempt > f.ord.attempt {
		// Lines of an attempt all precede its terminal status; release any
		// held back by a gap before the status is shown.
		if err := f.ord.flush(); err != nil {
			return err
		}
	}
	if err := f.fn(ev); err != nil {
		return err
	}
	f.ended = f.follow && s.State.Terminal() && s.Attempt >= f.lastAttempt
	return nil
}

// gap says whether lines are held back for want of an earlier one.
func (f *follower) gap() bool {
	for _, held := range f.ord.held {
		if len(held) > 0 {
			return true
		}
	}
	return false
}

// complete says whether every line that end, a terminal status, counts
// was handed over.
func (f *follower) complete(end *subjects.StatusEvent) bool {
	if end.Lines == nil {
		return false
	}
	next, ok := f.ord.next[end.Attempt]
	if !ok {
		next = 1
	}
	return next-1 == *end.Lines
}

// ReadAudit replays the audit trail (admins and observers), oldest first;
// with follow it goes on with new entries until ctx ends.
func (c *Conn) ReadAudit(ctx context.Context, follow bool, fn func(subjects.AuditEntry) error) error {
	err := c.read(ctx, subjects.ReadRequest{Audit: true}, follow, false, func(m *nats.Msg) (bool, error) {
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
// following and short enough to notice a cancelled context soon. A read
// that waits for its coordinator asks again this often, and gives each ask
// askTimeout.
const (
	readBatch        = 512
	readWait         = 5 * time.Second
	coordinatorRetry = 250 * time.Millisecond
	askTimeout       = 10 * time.Second
)

// read asks the coordinator for a reader consumer and pulls from it from
// the first message: until the messages stored when it began are read, or,
// with follow, until each says it is the last or ctx ends. If the server
// loses the consumer (a restart: readers live in memory), read asks for
// another from the message after the last it handed over, so nothing is
// missed or shown twice; that, and a read that resumes a follow, wait for
// a coordinator that is away (restarting), or for a free reader slot,
// until ctx ends. The consumer is released afterwards.
func (c *Conn) read(ctx context.Context, req subjects.ReadRequest, follow, resume bool, each func(*nats.Msg) (last bool, err error)) error {
	var (
		rd     subjects.Reader
		puller *Puller
	)
	// Each ask has a deadline of its own: ctx may have none (the CLI's),
	// and a coordinator killed while it held the request never answers.
	ask := func() (*subjects.Reply, error) {
		actx, cancel := context.WithTimeout(ctx, askTimeout)
		defer cancel()
		return c.call(actx, subjects.VerbRead, req)
	}
	open := func(patient bool) error {
		r, err := ask()
		// A conflict is all the caller's reader slots in use, by its other
		// reads, which end.
		for warned := false; patient && ctx.Err() == nil && (errors.Is(err, ErrNoCoordinator) ||
			errors.Is(err, context.DeadlineExceeded) || errors.Is(err, &subjects.Error{Code: subjects.CodeConflict})); {
			if !warned {
				c.log.Warn("waiting to read the job's stored events", "job", req.Job, "err", err)
				warned = true
			}
			select {
			case <-time.After(coordinatorRetry):
			case <-ctx.Done():
				return fmt.Errorf("%w (waited for it until %w)", err, ctx.Err())
			}
			r, err = ask()
		}
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
	if err := open(resume); err != nil {
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
			if err := open(true); err != nil {
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

// decodeEvent decodes an event of kind, stored or live.
func decodeEvent(m *nats.Msg, kind subjects.EventKind) (Event, error) {
	if kind == subjects.KindStatus {
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
