package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The baselines' own streams, beside Outpost's on the same server. They
// are deleted when the baselines are done, so Outpost's figures are taken
// on a server that holds only Outpost's data.
const (
	rawJobs   = "BENCH_JOBS"   // bench.jobs.<run>.<n>: the work queue
	rawEvents = "BENCH_EVENTS" // bench.ev.<run>.<n>: statuses
	rawLogs   = "BENCH_LOGS"   // bench.logs.<subject>: async publishes, replayed
	rawWorker = "workers"      // the work queue's one pull consumer
)

// rawBus is the baseline side of the bench: nats.go alone, no Outpost
// code, on a connection with a credential for the whole account.
type rawBus struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func dialRaw(ctx context.Context, url, creds string) (*rawBus, error) {
	nc, err := nats.Connect(url, nats.UserCredentials(creds), nats.Name("outpost-bench-raw"))
	if err != nil {
		return nil, fmt.Errorf("raw connection: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("raw connection: %w", err)
	}
	r := &rawBus{nc: nc, js: js}
	if err := r.setup(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return r, nil
}

// setup makes the streams as Outpost makes its own: file-backed, the jobs
// a work queue with one durable pull consumer.
func (r *rawBus) setup(ctx context.Context) error {
	for _, cfg := range []jetstream.StreamConfig{
		{Name: rawJobs, Subjects: []string{"bench.jobs.>"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage},
		{Name: rawEvents, Subjects: []string{"bench.ev.>"}, Storage: jetstream.FileStorage},
		{Name: rawLogs, Subjects: []string{"bench.logs.>"}, Storage: jetstream.FileStorage},
	} {
		if _, err := r.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("raw stream %s: %w", cfg.Name, err)
		}
	}
	_, err := r.js.CreateOrUpdateConsumer(ctx, rawJobs, jetstream.ConsumerConfig{
		Durable: rawWorker, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: -1,
	})
	if err != nil {
		return fmt.Errorf("raw consumer: %w", err)
	}
	return nil
}

// close deletes the baselines' streams and closes the connection.
func (r *rawBus) close(ctx context.Context) error {
	var errs []error
	for _, s := range []string{rawJobs, rawEvents, rawLogs} {
		if err := r.js.DeleteStream(ctx, s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("delete raw stream %s: %w", s, err))
		}
	}
	r.nc.Close()
	return errors.Join(errs...)
}

// rawExec starts /bin/true and waits for it, over and over for window.
// It returns each run's duration.
func rawExec(ctx context.Context, window time.Duration) ([]time.Duration, error) {
	var runs []time.Duration
	start := time.Now()
	for time.Since(start) < window {
		t0 := time.Now()
		if err := exec.CommandContext(ctx, "/bin/true").Run(); err != nil {
			return nil, fmt.Errorf("raw exec of /bin/true: %w", err)
		}
		runs = append(runs, time.Since(t0))
	}
	return runs, nil
}

// clockCommand prints the clock when it runs: the dispatch figure's job.
var clockCommand = []string{"date", "+%s%N"}

// clockOf reads the clock clockCommand printed.
func clockOf(out []byte) (time.Time, error) {
	ns, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a clock: %w", out, err)
	}
	return time.Unix(0, ns), nil
}

// rawClock starts the dispatch figure's command, clockCommand, n times,
// and returns for each the time from the start to the clock it printed:
// what the command itself adds to a dispatch, before Outpost's share.
func rawClock(ctx context.Context, n int) ([]time.Duration, error) {
	runs := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		out, err := exec.CommandContext(ctx, clockCommand[0], clockCommand[1:]...).Output()
		if err != nil {
			return nil, fmt.Errorf("raw exec of date: %w", err)
		}
		at, err := clockOf(out)
		if err != nil {
			return nil, fmt.Errorf("raw exec of date: %w", err)
		}
		runs = append(runs, at.Sub(t0))
	}
	return runs, nil
}

// worker is one raw agent slot: it pulls one job at a time, runs /bin/true
// when exec is set, publishes the job's status and waits for the store's
// ack, then acks the job, until ctx ends.
func (r *rawBus) worker(ctx context.Context, exec bool) error {
	cons, err := r.js.Consumer(ctx, rawJobs, rawWorker)
	if err != nil {
		return fmt.Errorf("raw worker: %w", err)
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("raw fetch: %w", err)
		}
		for m := range batch.Messages() {
			if exec {
				if err := runTrue(ctx); err != nil {
					return err
				}
			}
			status := "bench.ev." + m.Subject()[len("bench.jobs."):]
			if _, err := r.js.Publish(ctx, status, []byte(`{"state":"succeeded","exit_code":0}`)); err != nil {
				return fmt.Errorf("raw status: %w", err)
			}
			if err := m.Ack(); err != nil {
				return fmt.Errorf("raw ack: %w", err)
			}
		}
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("raw fetch: %w", err)
		}
	}
	return nil
}

func runTrue(ctx context.Context) error {
	if err := exec.CommandContext(ctx, "/bin/true").Run(); err != nil {
		return fmt.Errorf("run /bin/true: %w", err)
	}
	return nil
}

// workers runs n workers until the returned stop is called, which returns
// the first error any of them met.
func (r *rawBus) workers(ctx context.Context, n int, exec bool) (stop func() error) {
	ctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- parallel(ctx, n, n, func(ctx context.Context, _ int) error {
			// An error once stopped is the stop itself (a publish whose ack
			// was still on its way when the watcher saw the message).
			if err := r.worker(ctx, exec); err != nil && ctx.Err() == nil {
				return err
			}
			return nil
		})
	}()
	return func() error {
		cancel()
		return <-errc
	}
}

// latency sends n jobs one at a time through the raw loop (one worker, no
// exec) and returns, for each, the time from its publish to a watcher
// seeing its status. One job more goes first to warm the path up, and is
// not counted.
func (r *rawBus) latency(ctx context.Context, n int) ([]time.Duration, error) {
	seen := make(chan string, n)
	sub, err := r.nc.Subscribe("bench.ev.lat.>", func(m *nats.Msg) { seen <- m.Subject })
	if err != nil {
		return nil, fmt.Errorf("raw watcher: %w", err)
	}
	defer sub.Unsubscribe()
	if err := r.nc.Flush(); err != nil {
		return nil, err
	}
	stop := r.workers(ctx, 1, false)
	var out []time.Duration
	for i := range n + 1 {
		id := strconv.Itoa(i)
		t0 := time.Now()
		if _, err := r.js.Publish(ctx, "bench.jobs.lat."+id, []byte(id)); err != nil {
			stop()
			return nil, fmt.Errorf("raw publish: %w", err)
		}
		select {
		case s := <-seen:
			if s != "bench.ev.lat."+id {
				stop()
				return nil, fmt.Errorf("raw watcher saw %s, want job %s", s, id)
			}
		case <-ctx.Done():
			stop()
			return nil, fmt.Errorf("raw loop latency: %w", ctx.Err())
		}
		if i > 0 {
			out = append(out, time.Since(t0))
		}
	}
	return out, stop()
}

// rate sends n jobs through the raw loop with workers pulling, /bin/true
// run for each when exec is set, and returns the jobs per second from the
// first publish to the watcher seeing the last status.
func (r *rawBus) rate(ctx context.Context, run string, n, workers int, exec bool) (float64, error) {
	done := make(chan struct{})
	var count atomic.Int64
	sub, err := r.nc.Subscribe("bench.ev."+run+".>", func(*nats.Msg) {
		if count.Add(1) == int64(n) {
			close(done)
		}
	})
	if err != nil {
		return 0, fmt.Errorf("raw watcher: %w", err)
	}
	defer sub.Unsubscribe()
	if err := r.nc.Flush(); err != nil {
		return 0, err
	}
	stop := r.workers(ctx, workers, exec)
	start := time.Now()
	for i := range n {
		if _, err := r.js.PublishAsync("bench.jobs."+run+"."+strconv.Itoa(i), nil); err != nil {
			stop()
			return 0, fmt.Errorf("raw publish: %w", err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		stop()
		return 0, fmt.Errorf("raw loop %s: %d of %d statuses seen: %w", run, count.Load(), n, ctx.Err())
	}
	elapsed := time.Since(start)
	return perSecond(n, elapsed), stop()
}

// publishAsync stores n messages of 100 bytes in a file stream with async
// publishes (nats.go's default window) and returns messages per second
// until the last ack.
func (r *rawBus) publishAsync(ctx context.Context, subject string, n int) (float64, error) {
	payload := bytes.Repeat([]byte("x"), 99)
	payload = append(payload, '\n')
	start := time.Now()
	for range n {
		if _, err := r.js.PublishAsync(subject, payload); err != nil {
			return 0, fmt.Errorf("raw async publish: %w", err)
		}
	}
	select {
	case <-r.js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, fmt.Errorf("raw async publish: %w", ctx.Err())
	}
	elapsed := time.Since(start)
	return perSecond(n, elapsed), r.expect(ctx, rawLogs, subject, n)
}

// publishAcked stores n messages in the work queue from inflight
// publishers, each waiting for its ack before the next, and returns
// messages per second.
func (r *rawBus) publishAcked(ctx context.Context, n, inflight int) (float64, error) {
	start := time.Now()
	err := parallel(ctx, n, inflight, func(ctx context.Context, i int) error {
		if _, err := r.js.Publish(ctx, "bench.jobs.backlog."+strconv.Itoa(i), []byte(`{"command":["/bin/true"]}`)); err != nil {
			return fmt.Errorf("raw acked publish: %w", err)
		}
		return nil
	})
	return perSecond(n, time.Since(start)), err
}

// expect checks that the stream holds n messages on subject: a baseline
// that lost messages would flatter itself.
func (r *rawBus) expect(ctx context.Context, stream, subject string, n int) error {
	s, err := r.js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return err
	}
	if got := info.State.Subjects[subject]; got != uint64(n) {
		return fmt.Errorf("raw stream %s holds %d messages on %s, want %d", stream, got, subject, n)
	}
	return nil
}

// replay reads the n messages on subject back from the first, through an
// ordered consumer filtered to it, and returns messages per second,
// counting the consumer's creation.
func (r *rawBus) replay(ctx context.Context, subject string, n int) (float64, error) {
	start := time.Now()
	cons, err := r.js.OrderedConsumer(ctx, rawLogs, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return 0, fmt.Errorf("raw replay consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, fmt.Errorf("raw replay: %w", err)
	}
	defer it.Stop()
	stopOnCancel := context.AfterFunc(ctx, it.Stop)
	defer stopOnCancel()
	for range n {
		if _, err := it.Next(); err != nil {
			return 0, fmt.Errorf("raw replay: %w", err)
		}
	}
	return perSecond(n, time.Since(start)), nil
}
