package coordinator

import (
	"context"
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
func (c *Coordinator) watchLost(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	l := lost{c: c, start: time.Now(), missFor: c.limits.AckWait * 3 / 2, silentFor: 2*c.limits.AckWait + onlineFor,
		missing: map[string]int{}, since: map[string]time.Time{}, counted: map[string]time.Time{}, queued: map[string]time.Time{}}
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		l.running(ctx)
		l.stuck(ctx)
	}
}

// lost is what watchLost remembers from one check to the next.
type lost struct {
	c                  *Coordinator
	start              time.Time
	missFor, silentFor time.Duration

	missing map[string]int       // running job -> beats in a row without it
	since   map[string]time.Time // running job -> when the first of them came
	counted map[string]time.Time // running job -> the last beat counted
	queued  map[string]time.Time // queued job of a drained tag -> first seen
}

// running requeues the running jobs their agents no longer run.
func (l *lost) running(ctx context.Context) {
	c := l.c
	recs, err := c.jobs.list(ctx, func(r *subjects.Record) bool { return r.State == subjects.StateRunning }, maxList)
	if err != nil {
		c.log.Warn("lost job check failed", "err", err)
		return
	}
	running := map[string]bool{}
	for _, rec := range recs {
		running[rec.ID] = true
		hb, seen, known := c.fleet.last(rec.Agent)
		var reason string
		switch {
		case known && slices.Contains(hb.Running, rec.ID):
			delete(l.missing, rec.ID)
		case known && seen.After(l.counted[rec.ID]):
			l.counted[rec.ID] = seen
			if l.missing[rec.ID]++; l.missing[rec.ID] == 1 {
				l.since[rec.ID] = seen
			}
			if l.missing[rec.ID] >= lostBeats && seen.Sub(l.since[rec.ID]) > l.missFor {
				reason = "its agent " + rec.Agent + " no longer runs it"
			}
		}
		if !seen.After(l.start) {
			seen = l.start
		}
		if reason == "" && time.Since(seen) > l.silentFor {
			reason = "its agent " + rec.Agent + " went silent"
		}
		if reason == "" {
			continue
		}
		delete(l.missing, rec.ID)
		if err := c.requeue(ctx, rec, reason); err != nil {
			c.log.Warn("could not requeue a lost job", "job", rec.ID, "err", err)
		}
	}
	for id := range l.counted {
		if !running[id] {
			delete(l.missing, id)
			delete(l.since, id)
			delete(l.counted, id)
		}
	}
}

// stuck requeues the queued jobs of tags whose consumer holds nothing: no
// agent will ever be given their requests.
func (l *lost) stuck(ctx context.Context) {
	c := l.c
	drained := map[string]bool{}
	c.tags.Range(func(k, _ any) bool {
		tag := k.(string)
		cons, err := c.js.Consumer(ctx, subjects.JobsStream, subjects.AgentsConsumer(tag))
		if err != nil {
			return true
		}
		if ci, err := cons.Info(ctx); err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 {
			drained[tag] = true
		}
		return true
	})
	if len(drained) == 0 {
		clear(l.queued)
		return
	}
	recs, err := c.jobs.list(ctx, func(r *subjects.Record) bool { return r.State == subjects.StateQueued && drained[r.Tag] }, maxList)
	if err != nil {
		c.log.Warn("stuck job check failed", "err", err)
		return
	}
	seen := map[string]time.Time{}
	for _, rec := range recs {
		first, ok := l.queued[rec.ID]
		if !ok {
			first = time.Now()
		}
		seen[rec.ID] = first
		if time.Since(first) <= l.missFor {
			continue
		}
		delete(seen, rec.ID)
		if err := c.requeue(ctx, rec, "its request was lost from the queue"); err != nil {
			c.log.Warn("could not requeue a stuck job", "job", rec.ID, "err", err)
		}
	}
	l.queued = seen
}
