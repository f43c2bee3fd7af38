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

// watchLost requeues running jobs that no agent runs any more, until ctx
// ends. Normally the consumer's ack wait hands a dead agent's job on; but
// a server that restarts after a crash may come back with a consumer state
// older than the truth, in which a delivered job is no longer pending and
// so is never delivered again. The agents' heartbeats say which jobs each
// holds, so a job is lost when
//   - its agent beats without it, lostBeats times in a row and for longer
//     than 1.5 times the ack wait (the agent restarted, and the consumer,
//     whose redelivery comes first and keeps the job's place in the
//     queue, has not handed the job on), or
//   - its agent has been silent for twice the ack wait, and the consumer
//     has not handed the job on either.
//
// A requeue is a new attempt, so whatever the old one still sends is
// fenced off; should the old request be delivered all the same, the agent
// that stores the attempt's running status second leaves it to the first.
func (c *Coordinator) watchLost(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	start := time.Now()
	silentFor := 2*c.limits.AckWait + onlineFor
	missFor := c.limits.AckWait * 3 / 2
	missing := map[string]int{}       // job -> beats in a row without it
	since := map[string]time.Time{}   // job -> when the first of them came
	counted := map[string]time.Time{} // job -> the last beat counted
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		recs, err := c.jobs.list(ctx, func(r *subjects.Record) bool { return r.State == subjects.StateRunning }, maxList)
		if err != nil {
			c.log.Warn("lost job check failed", "err", err)
			continue
		}
		running := map[string]bool{}
		for _, rec := range recs {
			running[rec.ID] = true
			hb, seen, known := c.fleet.last(rec.Agent)
			var reason string
			switch {
			case known && slices.Contains(hb.Running, rec.ID):
				delete(missing, rec.ID)
			case known && seen.After(counted[rec.ID]):
				counted[rec.ID] = seen
				if missing[rec.ID]++; missing[rec.ID] == 1 {
					since[rec.ID] = seen
				}
				if missing[rec.ID] >= lostBeats && seen.Sub(since[rec.ID]) > missFor {
					reason = "its agent " + rec.Agent + " no longer runs it"
				}
			}
			if !seen.After(start) {
				seen = start
			}
			if reason == "" && time.Since(seen) > silentFor {
				reason = "its agent " + rec.Agent + " went silent"
			}
			if reason == "" {
				continue
			}
			delete(missing, rec.ID)
			if err := c.requeue(ctx, rec, reason); err != nil {
				c.log.Warn("could not requeue a lost job", "job", rec.ID, "err", err)
			}
		}
		for id := range counted {
			if !running[id] {
				delete(missing, id)
				delete(since, id)
				delete(counted, id)
			}
		}
	}
}
