package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/subjects"
)

// agentRSS runs one agent binary with nothing to do and returns the
// largest resident set it had over window.
func (b *bench) agentRSS(ctx context.Context, window time.Duration) (int64, error) {
	ag, err := b.startAgent(ctx, "idle-agent", "idle", 1)
	if err != nil {
		return 0, err
	}
	defer ag.stop()
	_, rss, err := ag.idle(ctx, window)
	return rss, err
}

// fanIn connects n idle agents, each with a credential and a connection of
// its own, all in this process with the agent package, and once the
// coordinator's fleet counts them all it samples the coordinator over
// window: its CPU, as a share of one core, and its largest resident set.
func (b *bench) fanIn(ctx context.Context, n int, window time.Duration) (cpuPercent float64, rss int64, err error) {
	const tag = "fanin"
	creds := make([]string, n)
	if err := parallel(ctx, n, 8, func(ctx context.Context, i int) error {
		var err error
		creds[i], err = b.credential(ctx, accounts.RoleAgent, fmt.Sprintf("fan-%04d", i), tag)
		return err
	}); err != nil {
		return 0, 0, err
	}
	actx, stopAgents := context.WithCancel(ctx)
	var (
		running sync.WaitGroup
		mu      sync.Mutex
		failed  error
		conns   []*client.Conn
	)
	defer func() {
		stopAgents()
		running.Wait()
		for _, c := range conns {
			c.Close()
		}
	}()
	err = parallel(ctx, n, 16, func(ctx context.Context, i int) error {
		c, err := client.Dial(ctx, client.DialOptions{URL: b.url, Creds: creds[i], ConnName: "outpost-bench-fan-in", Logger: b.quiet})
		if err != nil {
			return err
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		a, err := agent.New(agent.Config{Conn: c, WorkDir: filepath.Join(b.work, "jobs"), Logger: b.quiet})
		if err != nil {
			return err
		}
		running.Add(1)
		go func() {
			defer running.Done()
			if err := a.Run(actx); err != nil {
				mu.Lock()
				failed = cmp.Or(failed, err)
				mu.Unlock()
			}
		}()
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	idleRE := regexp.MustCompile(`(?m)^outpost_agents\{state="idle",tag="` + tag + `"\} (\d+)$`)
	if err := b.awaitMetric(ctx, idleRE, n); err != nil {
		return 0, 0, fmt.Errorf("the coordinator does not count %d idle agents: %w", n, err)
	}
	// Let the start-up burst (a consumer lookup per agent) pass.
	select {
	case <-time.After(window / 6):
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	if cpuPercent, rss, err = b.coord.idle(ctx, window); err != nil {
		return 0, 0, err
	}
	mu.Lock()
	defer mu.Unlock()
	if failed != nil {
		return 0, 0, fmt.Errorf("an idle agent stopped: %w", failed)
	}
	return cpuPercent, rss, nil
}

// backlog queues n jobs of /bin/true for a tag whose agent is issued but
// never started, from 32 submitters at once (the coordinator's API
// workers), and returns the submits per second and the coordinator's
// resident set once they are all queued.
func (b *bench) backlog(ctx context.Context, n int) (rate float64, rss int64, err error) {
	const tag = "backlog"
	// The credential makes the tag's consumer; no agent ever pulls from it.
	if _, err := b.credential(ctx, accounts.RoleAgent, "backlog-agent", tag); err != nil {
		return 0, 0, err
	}
	elapsed, err := b.submitMany(ctx, subjects.JobSpec{Tag: tag, Command: []string{"/bin/true"}}, n, 32)
	if err != nil {
		return 0, 0, err
	}
	depthRE := regexp.MustCompile(`(?m)^outpost_queue_depth\{tag="` + tag + `"\} (\d+)$`)
	if err := b.awaitMetric(ctx, depthRE, n); err != nil {
		return 0, 0, fmt.Errorf("the queue does not hold the %d jobs: %w", n, err)
	}
	u, err := b.coord.usage()
	if err != nil {
		return 0, 0, err
	}
	return perSecond(n, elapsed), u.rss, nil
}

// awaitMetric waits until the coordinator's /metrics has the value want on
// the line re matches (its first group).
func (b *bench) awaitMetric(ctx context.Context, re *regexp.Regexp, want int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	last := "nothing"
	for {
		body, err := b.scrape(ctx)
		if err == nil {
			if m := re.FindStringSubmatch(body); m != nil {
				if v, _ := strconv.Atoi(m[1]); v == want {
					return nil
				}
				last = m[0]
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("last saw %s: %w", last, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (b *bench) scrape(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.metrics, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// parallel calls fn for 0..n-1 from workers goroutines and returns the
// first error, which ends the rest.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
