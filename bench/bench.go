package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/subjects"
)

// Counts size a run. Full is what 'make bench' uses; Smoke keeps the code
// working in CI.
type Counts struct {
	// ExecWindow is how long /bin/true is run over and over.
	ExecWindow time.Duration `json:"exec_window_ns"`
	// Latency is how many samples each latency figure takes.
	Latency int `json:"latency"`
	// Loop is how many jobs go through each raw work loop.
	Loop int `json:"loop"`
	// Jobs is how many trivial jobs each Outpost throughput figure runs.
	Jobs int `json:"jobs"`
	// Messages is how many raw async publishes are made, then replayed.
	Messages int `json:"messages"`
	// Lines is N of the job 'seq 1 N' whose output is followed and replayed.
	Lines int `json:"lines"`
	// Agents is how many idle agents the fan-in connects.
	Agents int `json:"agents"`
	// IdleWindow is how long an idle process's CPU and memory are sampled.
	IdleWindow time.Duration `json:"idle_window_ns"`
	// Backlog is how many jobs are queued for a tag no agent serves.
	Backlog int `json:"backlog"`
}

// Full are the counts the issue asks for; a run takes a few minutes on two
// cores.
func Full() Counts {
	return Counts{ExecWindow: 3 * time.Second, Latency: 300, Loop: 2000, Jobs: 1000, Messages: 1_000_000,
		Lines: 1_000_000, Agents: 1000, IdleWindow: 30 * time.Second, Backlog: 100_000}
}

// Smoke are counts small enough for CI, large enough to run every path.
func Smoke() Counts {
	return Counts{ExecWindow: 200 * time.Millisecond, Latency: 10, Loop: 50, Jobs: 30, Messages: 10_000,
		Lines: 20_000, Agents: 20, IdleWindow: 2 * time.Second, Backlog: 300}
}

// Options shape a run.
type Options struct {
	// Bin holds the coordinator and agent binaries under measurement.
	Bin string
	// Work is where the run makes its scratch directory (the coordinator's
	// data, creds, logs), which is kept; empty means the system's temporary
	// directory, and the scratch directory is removed afterwards.
	Work string
	// Results is where the report's JSON goes (a timestamped file and
	// latest.json); empty writes none.
	Results string
	// Counts size the run; the zero value means Full.
	Counts Counts
	// Logger reports progress; nil means slog.Default.
	Logger *slog.Logger
}

// bench is one run: a coordinator process with its embedded server, and
// the admin's connection to it.
type bench struct {
	counts  Counts
	bin     string
	work    string
	data    string // the coordinator's data directory
	url     string // where clients connect
	metrics string // the coordinator's /metrics
	log     *slog.Logger
	// quiet logs for the parts run in this process (the fan-in agents): only
	// warnings, to a file.
	quiet *slog.Logger
	coord *proc
	admin *client.Conn
	procs []*proc
	close []func()
}

var (
	bannerRE     = regexp.MustCompile(`listening on (nats://\S+);`)
	metricsRE    = regexp.MustCompile(`serving metrics and health.* addr=(http://\S+)`)
	agentReadyRE = regexp.MustCompile(`agent ready`)
)

// Run measures the baselines and Outpost's figures and returns the report,
// written to Options.Results as well.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Counts == (Counts{}) {
		o.Counts = Full()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	work, err := os.MkdirTemp(o.Work, "outpost-bench-")
	if err != nil {
		return nil, fmt.Errorf("scratch directory: %w", err)
	}
	if o.Work == "" {
		defer os.RemoveAll(work)
	} else {
		o.Logger.Info("scratch directory", "dir", work)
	}
	rep := newReport(o.Counts)
	b, err := start(ctx, o, work)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	if err := b.measure(ctx, rep); err != nil {
		return nil, err
	}
	rep.finish()
	if o.Results != "" {
		if err := rep.write(o.Results); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// start runs the coordinator binary on a fresh data directory, with its
// embedded server on a free port, and dials the admin.
func start(ctx context.Context, o Options, work string) (*bench, error) {
	b := &bench{counts: o.Counts, bin: o.Bin, work: work, data: filepath.Join(work, "data"), log: o.Logger}
	for _, d := range []string{"creds", "logs", "jobs"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o700); err != nil {
			return nil, fmt.Errorf("scratch directory: %w", err)
		}
	}
	ql, err := os.Create(filepath.Join(work, "logs", "in-process.log"))
	if err != nil {
		return nil, err
	}
	b.close = append(b.close, func() { ql.Close() })
	b.quiet = slog.New(slog.NewTextHandler(ql, &slog.HandlerOptions{Level: slog.LevelWarn}))
	coord, err := b.startProc("coordinator", []*regexp.Regexp{bannerRE, metricsRE},
		"run", "--data", b.data, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--local-agent=false")
	if err != nil {
		b.stop()
		return nil, err
	}
	b.coord = coord
	if err := b.connect(ctx); err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

// connect waits for the coordinator's banner and its API, and dials the
// admin.
func (b *bench) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	m, err := b.coord.await(ctx, bannerRE)
	if err != nil {
		return err
	}
	b.url = m[1]
	if m, err = b.coord.await(ctx, metricsRE); err != nil {
		return err
	}
	b.metrics = m[1] + "/metrics"
	admin, err := b.credential(ctx, accounts.RoleAdmin, "admin")
	if err != nil {
		return err
	}
	if b.admin, err = client.Dial(ctx, client.DialOptions{URL: b.url, Creds: admin, ConnName: "outpost-bench", Logger: b.quiet}); err != nil {
		return err
	}
	// The banner comes before the API answers.
	for {
		_, err := b.admin.List(ctx, subjects.ListRequest{Limit: 1})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the coordinator's API does not answer: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// credential returns the path of a creds file for role and name. It is the
// one place the bench gets credentials, so that it follows the accounts
// design as that changes: the coordinator's and the admin's are the ones
// 'coordinator run' made in its data directory; any other is issued
// through the admin API, as 'outpost admin agent add' does.
func (b *bench) credential(ctx context.Context, role accounts.Role, name string, tags ...string) (string, error) {
	if role == accounts.RoleCoordinator || role == accounts.RoleAdmin {
		return filepath.Join(b.data, "creds", name+".creds"), nil
	}
	_, creds, err := b.admin.Issue(ctx, subjects.IssueRequest{Name: name, Role: string(role), Tags: tags})
	if err != nil {
		return "", fmt.Errorf("issue %s credential %s: %w", role, name, err)
	}
	p := filepath.Join(b.work, "creds", name+".creds")
	if err := os.WriteFile(p, []byte(creds), 0o600); err != nil {
		return "", fmt.Errorf("save creds of %s: %w", name, err)
	}
	return p, nil
}

// startProc runs one of the binaries under measurement, its output in a
// log file of the scratch directory.
func (b *bench) startProc(name string, watch []*regexp.Regexp, args ...string) (*proc, error) {
	logPath := filepath.Join(b.work, "logs", fmt.Sprintf("%s-%d.log", name, len(b.procs)))
	p, err := startProc(filepath.Join(b.bin, name), logPath, watch, args...)
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, p)
	b.log.Info("started", "binary", name, "pid", p.cmd.Process.Pid, "log", logPath)
	return p, nil
}

// startAgent runs the agent binary with a fresh credential of tag, and
// flags added to its own, and waits until it pulls.
func (b *bench) startAgent(ctx context.Context, name, tag string, concurrency int, flags ...string) (*proc, error) {
	creds, err := b.credential(ctx, accounts.RoleAgent, name, tag)
	if err != nil {
		return nil, err
	}
	p, err := b.startProc("agent", []*regexp.Regexp{agentReadyRE}, append([]string{"--server", b.url, "--creds", creds,
		"--concurrency", fmt.Sprint(concurrency), "--workdir", filepath.Join(b.work, "jobs")}, flags...)...)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := p.await(actx, agentReadyRE); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// procGrace is how long a binary has to exit after SIGTERM.
const procGrace = 10 * time.Second

// stop ends every process the run started, the coordinator last.
func (b *bench) stop() {
	if b.admin != nil {
		b.admin.Close()
	}
	for i := len(b.procs) - 1; i >= 0; i-- {
		b.procs[i].stop()
	}
	for _, f := range b.close {
		f()
	}
}

// phase runs one step of the run and logs how long it took.
func (b *bench) phase(what string, fn func() error) error {
	b.log.Info("measuring", "what", what)
	start := time.Now()
	if err := fn(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	b.log.Info("measured", "what", what, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
