package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/subjects"
)

// jobTimeout bounds one job of the latency and log figures, start to end.
const jobTimeout = 2 * time.Minute

// dispatch runs n jobs one at a time on an agent of their own, each the
// command 'date +%s%N', and returns for each the time from the submit to
// the process running (the clock it printed) and to its first line
// reaching the follower, which submitted the job as 'outpost run' does
// (client.Run). One job more runs first to warm the path up, and is not
// counted.
func (b *bench) dispatch(ctx context.Context, n int) (started, firstLine []time.Duration, err error) {
	const tag = "lat"
	ag, err := b.startAgent(ctx, "lat-agent", tag, 1)
	if err != nil {
		return nil, nil, err
	}
	defer ag.stop()
	for i := range n + 1 {
		s, f, err := b.dispatchOne(ctx, tag)
		if err != nil {
			return nil, nil, err
		}
		if i > 0 {
			started, firstLine = append(started, s), append(firstLine, f)
		}
	}
	return started, firstLine, nil
}

func (b *bench) dispatchOne(ctx context.Context, tag string) (started, firstLine time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, jobTimeout)
	defer cancel()
	var first, stamp time.Time
	t0 := time.Now()
	rec, err := b.run(ctx, subjects.JobSpec{Tag: tag, Command: clockCommand}, func(l *client.LogLines) error {
		if !first.IsZero() {
			return nil
		}
		first = time.Now()
		var perr error
		stamp, perr = clockOf(l.Data)
		return perr
	})
	if err != nil {
		return 0, 0, err
	}
	if first.IsZero() {
		return 0, 0, fmt.Errorf("job %s ended without a line", rec.ID)
	}
	return stamp.Sub(t0), first.Sub(t0), nil
}

// run runs spec as 'outpost run' does (client.Run), handing its lines to
// line, and fails unless the job succeeded.
func (b *bench) run(ctx context.Context, spec subjects.JobSpec, line func(*client.LogLines) error) (*subjects.Record, error) {
	rec, err := b.admin.Run(ctx, spec, client.RunOptions{}, func(ev client.Event) error {
		if ev.Log != nil {
			return line(ev.Log)
		}
		return succeeded(ev.Status.Job, ev.Status)
	})
	switch {
	case rec == nil:
		return nil, fmt.Errorf("submit: %w", err)
	case err != nil:
		return nil, fmt.Errorf("follow job %s: %w", rec.ID, err)
	}
	return rec, nil
}

// succeeded is an error if s is a terminal status other than success: the
// bench runs only jobs that succeed.
func succeeded(job string, s *subjects.StatusEvent) error {
	if s != nil && s.State.Terminal() && s.State != subjects.StateSucceeded {
		return fmt.Errorf("job %s ended %s: %s", job, s.State, s.Error)
	}
	return nil
}

// jobRate submits n jobs of /bin/true to tag, whose agents already run,
// and returns jobs per second from the first submit until a watcher has
// seen every job's terminal status.
func (b *bench) jobRate(ctx context.Context, tag string, n int) (float64, error) {
	done := make(chan struct{})
	var ended, failed atomic.Int64
	sub, err := b.admin.Subscribe(subjects.LiveSubject(tag, b.admin.Identity.Name, "*", subjects.KindStatus), func(m *nats.Msg) {
		var ev subjects.StatusEvent
		if json.Unmarshal(m.Data, &ev) != nil || !ev.State.Terminal() {
			return
		}
		if ev.State != subjects.StateSucceeded {
			failed.Add(1)
		}
		if ended.Add(1) == int64(n) {
			close(done)
		}
	})
	if err != nil {
		return 0, fmt.Errorf("watch statuses: %w", err)
	}
	defer sub.Unsubscribe()
	if err := b.admin.Flush(); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := b.submitMany(ctx, subjects.JobSpec{Tag: tag, Command: []string{"/bin/true"}}, n, 8); err != nil {
		return 0, err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, fmt.Errorf("%d of %d jobs ended: %w", ended.Load(), n, ctx.Err())
	}
	elapsed := time.Since(start)
	if f := failed.Load(); f > 0 {
		return 0, fmt.Errorf("%d of %d jobs did not succeed (see the agents' logs in %s)", f, n, b.work)
	}
	return perSecond(n, elapsed), nil
}

// submitMany submits n copies of spec from inflight submitters at once and
// returns how long it took.
func (b *bench) submitMany(ctx context.Context, spec subjects.JobSpec, n, inflight int) (time.Duration, error) {
	start := time.Now()
	err := parallel(ctx, n, inflight, func(ctx context.Context, _ int) error {
		if _, err := b.admin.Submit(ctx, spec); err != nil {
			return fmt.Errorf("submit: %w", err)
		}
		return nil
	})
	return time.Since(start), err
}

// logRates runs 'seq 1 lines' and returns the lines per second that reach
// a live follower (from the submit to the last line), then the lines per
// second of a replay of the finished job.
func (b *bench) logRates(ctx context.Context, lines int) (live, replay float64, err error) {
	const tag = "logs"
	ag, err := b.startAgent(ctx, "log-agent", tag, 1)
	if err != nil {
		return 0, 0, err
	}
	defer ag.stop()
	ctx, cancel := context.WithTimeout(ctx, jobTimeout)
	defer cancel()
	got, last := 0, time.Time{}
	t0 := time.Now()
	rec, err := b.run(ctx, subjects.JobSpec{Tag: tag, Command: []string{"seq", "1", strconv.Itoa(lines)}}, func(l *client.LogLines) error {
		got += l.Lines()
		last = time.Now()
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	if got != lines {
		return 0, 0, fmt.Errorf("the follower saw %d lines of job %s, want %d", got, rec.ID, lines)
	}
	live = perSecond(lines, last.Sub(t0))

	t1 := time.Now()
	got = 0
	err = b.admin.ReadEvents(ctx, rec.ID, client.ReadOptions{}, func(ev client.Event) error {
		if ev.Log != nil {
			got += ev.Log.Lines()
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("replay job %s: %w", rec.ID, err)
	}
	if got != lines {
		return 0, 0, fmt.Errorf("the replay gave %d lines of job %s, want %d", got, rec.ID, lines)
	}
	return live, perSecond(lines, time.Since(t1)), nil
}
