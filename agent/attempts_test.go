package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

// TestNakCountsAsAnAttempt: an agent that hands a job back (a Nak: it
// could not run it, or it was stopped while running it) has used one of
// the job's attempts. A client with an agent's creds takes the job and
// hands it back max_attempts times; the next agent fails it with the
// reason, without running it.
func TestNakCountsAsAnAttempt(t *testing.T) {
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	dir := t.TempDir()
	const maxAttempts = 3
	r := s.submit(t, subjects.JobSpec{Tag: "a", Dir: dir, MaxAttempts: maxAttempts, Command: sh("touch ran")})

	nak := s.env.Dial(s.agentCreds)
	cons, err := nak.JS.Consumer(testenv.Context(t), subjects.JobsStream, subjects.AgentsConsumer("a"))
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= maxAttempts; n++ {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(testenv.Timeout))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			if meta, _ := m.Metadata(); meta == nil || int(meta.NumDelivered) != n || m.Subject() != subjects.JobSubject("a", r.ID) {
				t.Fatalf("delivery %d: %s %+v", n, m.Subject(), meta)
			}
			if err := m.Nak(); err != nil {
				t.Fatal(err)
			}
			got++
		}
		if got != 1 {
			t.Fatalf("delivery %d: fetched %d jobs: %v", n, got, batch.Error())
		}
	}

	s.startAgent(t)
	rec := s.waitState(t, r.ID, subjects.StateFailed)
	if rec.Attempt != maxAttempts+1 || !strings.Contains(rec.Error, "max_attempts is 3") || !strings.Contains(rec.Error, "handed it back") {
		t.Errorf("record: attempt %d error %q", rec.Attempt, rec.Error)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Error("the job ran past its max_attempts")
	}
	testenv.Eventually(t, "the job to be acked", func() bool { return !s.queued(t, r.ID) })
}
