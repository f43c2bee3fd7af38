package testenv_test

import (
	"errors"
	"testing"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

func TestEnv(t *testing.T) {
	env := testenv.New(t)
	// Without a coordinator, creds are only signed, and the server takes
	// them.
	c := env.Dial(env.Creds(accounts.RoleAdmin, "early"))
	if c.Identity.Name != "early" || c.Identity.Role != accounts.RoleAdmin {
		t.Errorf("identity %+v", c.Identity)
	}
	env.StartCoordinator(coordinator.Limits{})
	agentCreds := env.Creds(accounts.RoleAgent, "agent-a", "a")
	env.StartAgent(agentCreds, agent.Config{})
	alice := env.Dial(env.Creds(accounts.RoleUser, "alice", "a"))
	r, err := alice.Submit(testenv.Context(t), subjects.JobSpec{Tag: "a", Command: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the job to succeed", func() bool {
		got, err := alice.Get(testenv.Context(t), r.ID)
		return err == nil && got.State == subjects.StateSucceeded
	})
	nc := env.NATS(env.Creds(accounts.RoleObserver, "obs", "a"))
	if !nc.IsConnected() {
		t.Error("plain connection is not connected")
	}
	// The coordinator's own creds are made once.
	if env.Creds(accounts.RoleCoordinator, subjects.CoordinatorName) != env.Creds(accounts.RoleCoordinator, subjects.CoordinatorName) {
		t.Error("two coordinator creds files")
	}
}

func TestLogs(t *testing.T) {
	var l testenv.Logs
	log := l.Logger().With("part", "x").WithGroup("g")
	mark := l.Len()
	log.Info("hello", "k", 1, "err", errors.New("boom"))
	e := l.Wait(t, mark, "hello", func(e testenv.Entry) bool { return e.Msg == "hello" })
	if e.Attrs["part"] != "x" || e.Attrs["g.k"] != "1" || e.Attrs["g.err"] != "boom" {
		t.Errorf("attrs %v", e.Attrs)
	}
	if _, ok := l.Find(l.Len(), func(testenv.Entry) bool { return true }); ok {
		t.Error("Find past the end found something")
	}
	if n := l.Count(0, func(testenv.Entry) bool { return true }); n != 1 {
		t.Errorf("Count = %d", n)
	}
}
