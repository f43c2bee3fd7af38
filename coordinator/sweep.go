package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/outpost-run/outpost/subjects"
)

// sweepEvery is how often the coordinator looks for queued jobs past their
// queue timeout. A job may so outlive its timeout by this much.
const sweepEvery = 5 * time.Second

// sweep fails the queued jobs that no agent started within their queue
// timeout, until ctx ends. Agents check the timeout too when a job reaches
// them; the sweep covers the jobs that reach no agent at all.
func (c *Coordinator) sweep(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		// A scan reads the whole jobs bucket: skip it while no queued job
		// has a queue timeout (the first sweep after a start always runs).
		before := c.timed.Load()
		if before == 0 {
			continue
		}
		now := time.Now()
		recs, err := c.jobs.list(ctx, func(r *subjects.Record) bool {
			return r.State == subjects.StateQueued && r.QueueTimeout > 0
		}, maxList)
		if err != nil {
			c.log.Warn("queue sweep failed", "err", err)
			continue
		}
		// Submits during the scan have added to the count; keep them.
		c.timed.Add(int64(len(recs)) - before)
		for _, rec := range recs {
			if !rec.QueueExpired(now) {
				continue
			}
			reason := fmt.Sprintf("no agent started it within its queue_timeout of %s", time.Duration(rec.QueueTimeout))
			ev := subjects.StatusEvent{Job: rec.ID, State: subjects.StateFailed, Attempt: rec.Attempt, Error: reason, At: now.UTC()}
			updated, changed, err := c.jobs.update(ctx, rec.ID, func(r *subjects.Record) bool {
				return r.State == subjects.StateQueued && r.Apply(ev)
			})
			if err != nil || !changed {
				continue
			}
			if err := c.dequeue(ctx, rec); err != nil {
				c.log.Warn("could not take an expired job off the queue; its agent will refuse it", "job", rec.ID, "err", err)
			}
			if err := c.publishStatus(ctx, updated, ev); err != nil {
				c.log.Warn("could not publish failed status", "job", rec.ID, "err", err)
			}
			c.log.Info("job expired in the queue", "job", rec.ID, "queue_timeout", time.Duration(rec.QueueTimeout))
		}
	}
}
