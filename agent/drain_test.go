package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

// runAgent runs an agent whose context the test controls, and returns the
// agent, the cancel that starts its drain, and a wait for Run's result.
func runAgent(t *testing.T, s *site, cfg agent.Config) (*agent.Agent, context.CancelFunc, func() error) {
	t.Helper()
	cfg.Conn = s.env.Dial(s.agentCreds)
	if cfg.WorkDir == "" {
		cfg.WorkDir = t.TempDir()
	}
	cfg.Logger = s.env.Logs.Logger().With("part", "agent")
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	done := make(chan struct{})
	mark := s.env.Logs.Len()
	go func() { runErr = a.Run(ctx); close(done) }()
	s.env.Logs.Wait(t, mark, "the agent to be ready", func(e testenv.Entry) bool { return e.Msg == "agent ready" })
	wait := func() error {
		select {
		case <-done:
			return runErr
		case <-time.After(testenv.Timeout):
			t.Fatal("the agent's Run did not return")
			return nil
		}
	}
	t.Cleanup(func() { cancel(); a.StopJobs(); <-done })
	return a, cancel, wait
}

func gated(dir string) (gate string, spec subjects.JobSpec) {
	gate = filepath.Join(dir, "gate")
	return gate, subjects.JobSpec{Tag: "a", Command: sh("while [ ! -e " + gate + " ]; do sleep 0.02; done; echo done")}
}

func TestDrainLetsRunningJobsFinish(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	_, drain, wait := runAgent(t, s, agent.Config{Concurrency: 2, DrainTimeout: testenv.Timeout})
	gate, spec := gated(t.TempDir())
	running := s.submit(t, spec)
	s.waitState(t, running.ID, subjects.StateRunning)

	drain()
	late := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("echo late")})
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatalf("Run after a drain: %v", err)
	}
	s.waitState(t, running.ID, subjects.StateSucceeded)
	if r, _ := s.alice.Get(testenv.Context(t), late.ID); r.State != subjects.StateQueued {
		t.Errorf("a draining agent took a new job: %s", r.State)
	}
}

func TestStopJobsRequeuesThem(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	a, drain, wait := runAgent(t, s, agent.Config{DrainTimeout: testenv.Timeout})
	gate, spec := gated(t.TempDir())
	job := s.submit(t, spec)
	s.waitState(t, job.ID, subjects.StateRunning)

	drain()
	a.StopJobs()
	if err := wait(); err != nil {
		t.Fatalf("Run after StopJobs: %v", err)
	}
	// Handed back at once, the job runs on the next agent as attempt 2.
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s.env.StartAgent(s.env.Creds(accounts.RoleAgent, "agent-a2", "a"), agent.Config{})
	r := s.waitState(t, job.ID, subjects.StateSucceeded)
	if r.Attempt != 2 || r.Agent != "agent-a2" {
		t.Errorf("requeued job: attempt %d on %s", r.Attempt, r.Agent)
	}
}
