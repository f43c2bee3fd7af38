package agent_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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

// TestAttemptStartedElsewhereIsNotRunTwice: a server that restarts before
// it saved a delivery delivers the job again with the same delivery count,
// so as the same attempt, while the first run goes on. Here the first run
// is a client with an agent's creds that stored the attempt's running
// status; the agent must leave the attempt to it rather than run it too,
// and once that run is silent past the ack wait, run the next attempt.
func TestAttemptStartedElsewhereIsNotRunTwice(t *testing.T) {
	t.Parallel()
	limits := coordinator.DefaultLimits
	limits.AckWait = time.Second
	s := newSite(t, limits)
	dir := t.TempDir()
	r := s.submit(t, subjects.JobSpec{Tag: "a", Dir: dir, Command: sh(`echo "$OUTPOST_ATTEMPT" >> runs`)})

	other := s.env.Dial(s.agentCreds)
	ev, _ := json.Marshal(subjects.StatusEvent{Job: r.ID, State: subjects.StateRunning, Attempt: 1, Agent: "agent-a", At: time.Now().UTC()})
	m := nats.NewMsg(subjects.EventSubject("a", "alice", r.ID, subjects.KindStatus))
	m.Data = ev
	m.Header.Set(subjects.HeaderMsgID, subjects.MsgID(r.ID, 1, string(subjects.StateRunning)))
	if _, err := other.JS.PublishMsg(testenv.Context(t), m); err != nil {
		t.Fatal(err)
	}
	s.waitState(t, r.ID, subjects.StateRunning)

	mark := s.env.Logs.Len()
	s.startAgent(t)
	s.env.Logs.Wait(t, mark, "the agent to leave attempt 1 to the other run", func(e testenv.Entry) bool {
		return e.Msg == "attempt already started by another run; leaving the job to it" && e.Attrs["attempt"] == "1"
	})
	rec := s.waitState(t, r.ID, subjects.StateSucceeded)
	runs, err := os.ReadFile(filepath.Join(dir, "runs"))
	if err != nil || string(runs) != "2\n" || rec.Attempt != 2 {
		t.Errorf("the job ran as attempts %q (%v); record at attempt %d; want it run once, as attempt 2", runs, err, rec.Attempt)
	}
}
