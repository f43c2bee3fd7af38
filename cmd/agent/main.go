// Command agent runs Outpost jobs of its credential's tags on this machine.
// It dials out to NATS and needs no listening port.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/internal/connflags"
)

func main() {
	if err := root().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func root() *cobra.Command {
	var (
		conn        connflags.Flags
		workdir     string
		concurrency int
		grace       time.Duration
		drain       time.Duration
		maxOutput   int64
		maxBuffer   int64
		metricsAddr string
		verbose     bool
		cgroups     agent.CgroupOptions
		runAs       string
		procs       int
	)
	cmd := &cobra.Command{
		Use:   "agent --server URL --creds FILE",
		Short: "Run Outpost jobs of this credential's tags on this machine",
		Long: `agent pulls jobs for the tags in its credential, runs each in its own process
group and work directory, and streams every output line back. It only dials
out. Issue its creds with 'outpost admin agent add NAME --tag TAG'.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if procs < 0 {
				return fmt.Errorf("--gomaxprocs %d: want 1 or more, or 0 for the default", procs)
			}
			// The agent's own work is a chain of small hand-offs (a pipe
			// read, a batch, a publish, an ack), each of which, with more
			// than one P, wakes a parked thread on another core. On one P a
			// hand-off is a run queue push: the bench's agents spent 13 %
			// less CPU per trivial job, and moved more log lines a second.
			// Jobs are processes of their own, and unaffected.
			if procs == 0 && os.Getenv("GOMAXPROCS") == "" {
				procs = 1
			}
			if procs > 0 {
				runtime.GOMAXPROCS(procs)
			}
			if conn.Creds == "" {
				return errors.New("--creds is required (or set OUTPOST_CREDS): the agent's creds file")
			}
			d := conn.Dial("outpost-agent")
			d.Reconnect, d.Logger = true, log
			// An agent's sync subscriptions take a pull's jobs or one reply
			// at a time: nats.go's default queue of 65,536 messages (512 KiB)
			// for each, made anew every 64 pulls, was a fifth of what a busy
			// agent allocated.
			d.Options = append(d.Options, nats.SyncQueueLen(4*agent.MaxPullBatch))
			nc, err := client.Dial(cmd.Context(), d)
			if err != nil {
				return err
			}
			defer nc.Close()
			a, err := agent.New(agent.Config{Conn: nc, Concurrency: concurrency, WorkDir: workdir, StopGrace: grace, DrainTimeout: drain, MaxOutput: maxOutput, MaxBuffered: maxBuffer, Cgroups: cgroups, RunAs: runAs, CredsFile: conn.Creds, Logger: log})
			if err != nil {
				return err
			}
			if metricsAddr != "" {
				reg := prometheus.NewRegistry()
				reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
				if err := a.Register(reg); err != nil {
					return err
				}
				l, err := net.Listen("tcp", metricsAddr)
				if err != nil {
					return fmt.Errorf("--metrics-addr %s: %w", metricsAddr, err)
				}
				hs := &http.Server{Handler: a.Handler(reg), ReadHeaderTimeout: 5 * time.Second}
				go func() { _ = hs.Serve(l) }()
				defer hs.Close()
				log.Info("serving metrics and health", "addr", "http://"+l.Addr().String())
			}
			// The first signal drains (no new jobs; running ones may finish
			// within --drain-timeout); a second stops the running jobs, which
			// go back to the queue.
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				s, ok := <-sigs
				if !ok {
					return
				}
				log.Info("draining; send the signal again to stop the running jobs", "signal", s.String(), "timeout", drain)
				cancel()
				if _, ok := <-sigs; ok {
					log.Info("stopping the running jobs; they go back to the queue")
					a.StopJobs()
				}
			}()
			return a.Run(ctx)
		},
	}
	f := cmd.Flags()
	conn.Bind(f, "the agent's creds file")
	f.IntVar(&concurrency, "concurrency", 1, "jobs whose processes run at once (a job whose process ended may still be storing its end)")
	f.StringVar(&workdir, "workdir", "", "directory for job work directories (default: a directory under $TMPDIR)")
	f.DurationVar(&grace, "stop-grace", 10*time.Second, "time between SIGTERM and SIGKILL when a job is stopped")
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve /metrics and /healthz here, such as 127.0.0.1:9091 (default: none)")
	f.Int64Var(&maxOutput, "max-output", agent.DefaultMaxOutput, "output bytes kept per job attempt; past it lines are dropped and a marker says so")
	f.Int64Var(&maxBuffer, "max-buffer", agent.DefaultMaxBuffered, "output bytes held while NATS is out of reach, for all jobs; past it lines are dropped and a marker says how many")
	f.DurationVar(&drain, "drain-timeout", 5*time.Minute, "on SIGTERM, how long running jobs may finish before they are stopped and requeued")
	f.StringVar(&runAs, "run-as", "", "run jobs as this user (its uid, gid and HOME), who must not be able to read --creds")
	f.BoolVar(&cgroups.Disabled, "no-cgroups", false, "run jobs without cgroups; jobs that ask for limits go back to the queue")
	f.StringVar(&cgroups.Parent, "cgroup-parent", "", "cgroup to make the agent's job cgroups under, such as /outpost (default: the agent's own)")
	f.IntVar(&procs, "gomaxprocs", 0, "threads that run the agent's own Go code at once, not its jobs' (default 1, or $GOMAXPROCS)")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return cmd
}
