package client_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

// A Puller serves pull after pull through one subscription, and after a
// pull given up while the server still waited on it, the next one gets
// the job, and no pull is left waiting.
func TestPullerKeepsItsSubscription(t *testing.T) {
	s := newSite(t)
	ctx := testenv.Context(t)
	p, err := s.agentA.NewPuller(subjects.JobsStream, subjects.AgentsConsumer("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	subs := s.agentA.NumSubscriptions()
	pull := func(ctx context.Context) []string {
		t.Helper()
		var got []string
		if _, err := p.Pull(ctx, 1, testenv.Timeout, func(m *nats.Msg) error {
			got = append(got, m.Subject)
			return m.Ack()
		}); err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
		return got
	}
	for range 3 {
		r, err := s.alice.Submit(ctx, subjects.JobSpec{Tag: "a", Command: []string{"true"}})
		if err != nil {
			t.Fatal(err)
		}
		if got := pull(ctx); len(got) != 1 || got[0] != subjects.JobSubject("a", r.ID) {
			t.Fatalf("pulled %q, want job %s", got, r.ID)
		}
		if n := s.agentA.NumSubscriptions(); n != subs {
			t.Fatalf("%d subscriptions after a pull, want %d", n, subs)
		}
	}

	// A pull given up while the server still waits on it.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan []string)
	go func() { done <- pull(cctx) }()
	waiting := func(n int) func() bool {
		return func() bool {
			cons, err := s.env.CoordConn.JS.Consumer(ctx, subjects.JobsStream, subjects.AgentsConsumer("a"))
			return err == nil && cons.CachedInfo().NumWaiting == n
		}
	}
	testenv.Eventually(t, "the pull to wait at the server", waiting(1))
	cancel()
	if got := <-done; len(got) != 0 {
		t.Fatalf("a cancelled pull handed over %q", got)
	}
	r, err := s.alice.Submit(ctx, subjects.JobSpec{Tag: "a", Command: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := pull(ctx); len(got) != 1 || got[0] != subjects.JobSubject("a", r.ID) {
		t.Fatalf("the pull after a cancelled one handed over %q, want job %s", got, r.ID)
	}
	testenv.Eventually(t, "no pull left waiting", waiting(0))
	if n := s.agentA.NumSubscriptions(); n != subs {
		t.Fatalf("%d subscriptions after pulling anew, want %d", n, subs)
	}
}

// Each pull from an agent's account has the server keep a reply path until
// its inbox is unsubscribed or ten minutes passed: a Puller moves to a new
// inbox every so many pulls, so that what the server keeps stays bounded.
func TestPullerBoundsTheServersReplyPaths(t *testing.T) {
	s := newSite(t)
	ctx := testenv.Context(t)
	acc, err := s.env.Server.LookupAccount(s.env.Auth.WorkPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.agentA.NewPuller(subjects.JobsStream, subjects.AgentsConsumer("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	before := acc.NumPendingAllResponses()
	for range 300 {
		if _, err := p.Pull(ctx, 1, 0, func(*nats.Msg) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.agentA.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := acc.NumPendingAllResponses() - before; n > 2*client.PullsPerInbox {
		t.Errorf("after 300 pulls the server keeps %d reply paths, want at most %d", n, 2*client.PullsPerInbox)
	}
}
