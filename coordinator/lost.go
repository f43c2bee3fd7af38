package coordinator

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/outpost-run/outpost/subjects"
)

// lostBeats is how many heartbeats in a row must leave a running job out
// before the coordinator takes it for lost.
const lostBeats = 3

// watchLost requeues jobs that no agent runs and none will get, until ctx
// ends. Normally the consumer's ack wait hands a dead agent's job on; but
// a server that restarts after a crash may come back with a consumer state
// older than the truth, in which a delivered job is no longer pending, or
// a job never delivered counts as delivered, and so is never delivered
// again. The agents' heartbeats say which jobs each holds, and the tag's
// consumer says whether it holds anything at all, so a job is lost when
//   - it runs, and its agent beats without it, lostBeats times in a row and
//     for longer than 1.5 ack waits (the agent restarted, and the consumer,
//     whose redelivery comes first and keeps the job's place in the queue,
//     has not handed the job on), or its agent has been silent for twice
//     the ack wait; or
//   - it is queued, for longer than 1.5 ack waits, while its tag's
//     consumer has nothing left to deliver and nothing delivered unacked.
//
// A requeue is a new attempt, so whatever an old one still sends is fenced
// off; should the old request be delivered all the same, the agent that
// stores the attempt's running status second leaves it to the first.
//
// The jobs come from the coordinator's view of the unfinished ones
// (active), read again from the jobs bucket at the first check and every
// activeSync after; each is read from its record before it is requeued.
func (c *Coordinator) watchLost(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	l := lost{c: c, start: time.Now(), missFor: c.limits.AckWait * 3 / 2, silentFor: silentAfter(c.limits.AckWait),
		missed: map[string]*missed{}, queued: map[string]time.Time{}}
	var synced time.Time
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if time.Since(synced) > activeSync {
			if err := c.jobs.live.sync(ctx, c.jobs); err != nil {
				c.log.Warn("lost job check failed", "err", err)
				continue
			}
			synced = time.Now()
			// Records remembered for jobs that ended elsewhere go too.
			c.jobs.recent.retain(c.jobs.live.has)
		}
		l.running(ctx)
		l.stuck(ctx)
	}
}

// silentAfter is how long the agent of a running job may be silent before
// the job is taken for lost.
func silentAfter(ackWait time.Duration) time.Duration { return 2*ackWait + onlineFor }

// activeSync is how often the lost-job check reads the whole jobs bucket
// again rather than trust the coordinator's own view of it.
const activeSync = 10 * time.Minute

// current reads a job's record for a requeue, and reports whether it is
// still as the check saw it.
func (l *lost) current(ctx context.Context, id string, was activeJob) (subjects.Record, bool) {
	rec, _, err := l.c.jobs.get(ctx, id)
	if errors.Is(err, errNoRecord) {
		l.c.jobs.live.forget(id)
		return rec, false
	}
	if err != nil {
		l.c.log.Warn("lost job check failed", "job", id, "err", err)
		return rec, false
	}
	l.c.jobs.live.note(rec)
	return rec, activeOf(rec) == was
}

// lost is what watchLost remembers from one check to the next.
type lost struct {
	c                  *Coordinator
	start              time.Time
	missFor, silentFor time.Duration

	missed map[string]*missed   // running job -> its agent's beats without it
	queued map[string]time.Time // queued job of a drained tag -> first seen
}

// missed counts the heartbeats in a row that left a running job out.
type missed struct {
	n       int
	since   time.Time // when the first of them came
	counted time.Time // the last beat counted
}

// running requeues the running jobs their agents no longer run.
func (l *lost) running(ctx context.Context) {
	c := l.c
	running := c.jobs.live.in(subjects.StateRunning, nil)
	for id, j := range running {
		hb, seen, known := c.fleet.last(j.agent)
		m := l.missed[id]
		if m == nil {
			m = &missed{}
			l.missed[id] = m
		}
		var reason string
		switch {
		case known && slices.Contains(hb.Running, id):
			m.n = 0
		case known && seen.After(m.counted):
			m.counted = seen
			if m.n++; m.n == 1 {
				m.since = seen
			}
			if m.n >= lostBeats && seen.Sub(m.since) > l.missFor {
				reason = "its agent " + j.agent + " no longer runs it"
			}
		}
		if !seen.After(l.start) {
			seen = l.start
		}
		if reason == "" && time.Since(seen) > l.silentFor {
			reason = "its agent " + j.agent + " went silent"
		}
		if reason == "" {
			continue
		}
		m.n = 0
		rec, same := l.current(ctx, id, j)
		if !same {
			continue
		}
		if err := c.requeue(ctx, rec, reason); err != nil {
			c.log.Warn("could not requeue a lost job", "job", id, "err", err)
		}
	}
	for id := range l.missed {
		if _, ok := running[id]; !ok {
			delete(l.missed, id)
		}
	}
}

// stuck requeues the queued jobs of tags whose consumer holds nothing: no
// agent will ever be given their requests.
func (l *lost) stuck(ctx context.Context) {
	c := l.c
	// Only the tags with queued jobs are asked about.
	drained := map[string]bool{}
	for tag := range c.jobs.live.tags(subjects.StateQueued) {
		cons, err := c.js.Consumer(ctx, subjects.JobsStream, subjects.AgentsConsumer(tag))
		if err != nil {
			continue
		}
		// Consumer fetched the info already.
		if ci := cons.CachedInfo(); ci.NumPending == 0 && ci.NumAckPending == 0 {
			drained[tag] = true
		}
	}
	seen := map[string]time.Time{}
	for id, j := range c.jobs.live.in(subjects.StateQueued, func(j activeJob) bool { return drained[j.tag] }) {
		first, ok := l.queued[id]
		if !ok {
			first = time.Now()
		}
		seen[id] = first
		if time.Since(first) <= l.missFor {
			continue
		}
		delete(seen, id)
		rec, same := l.current(ctx, id, j)
		if !same {
			continue
		}
		if err := c.requeue(ctx, rec, "its request was lost from the queue"); err != nil {
			c.log.Warn("could not requeue a stuck job", "job", id, "err", err)
		}
	}
	l.queued = seen
}
