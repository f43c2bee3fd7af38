package agent_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/client"
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
	for n := 1; n <= maxAttempts; n++ {
		got, err := nak.Pull(testenv.Context(t), subjects.JobsStream, subjects.AgentsConsumer("a"), 1, testenv.Timeout, func(m *nats.Msg) error {
			if meta, _ := m.Metadata(); meta == nil || int(meta.NumDelivered) != n || m.Subject != subjects.JobSubject("a", r.ID) {
				t.Fatalf("delivery %d: %s %+v", n, m.Subject, meta)
			}
			return m.Nak()
		})
		if got != 1 || err != nil {
			t.Fatalf("delivery %d: fetched %d jobs: %v", n, got, err)
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
// The agent starts a process while its running report is on its way, so
// the second run of attempt 1 may start; it must be killed, and store
// nothing. Attempt 1 never ends by itself here, so a run of it that was
// not killed would show.
func TestAttemptStartedElsewhereIsNotRunTwice(t *testing.T) {
	t.Parallel()
	s := newSite(t, quickLimits())
	dir := t.TempDir()
	r := s.submit(t, subjects.JobSpec{Tag: "a", Dir: dir, Command: sh(`echo $$ > "tmp.$OUTPOST_ATTEMPT"; mv "tmp.$OUTPOST_ATTEMPT" "pid.$OUTPOST_ATTEMPT"
echo "attempt $OUTPOST_ATTEMPT"
if [ "$OUTPOST_ATTEMPT" = 1 ]; then while :; do sleep 0.05; done; fi`)})

	s.otherAgent(t, r.ID).status(subjects.StateRunning)
	s.waitState(t, r.ID, subjects.StateRunning)

	mark := s.env.Logs.Len()
	s.startAgent(t)
	s.env.Logs.Wait(t, mark, "the agent to leave attempt 1 to the other run", func(e testenv.Entry) bool {
		return e.Msg == "attempt already started by another run; leaving the job to it" && e.Attrs["attempt"] == "1"
	})
	rec := s.waitState(t, r.ID, subjects.StateSucceeded)
	if rec.Attempt != 2 {
		t.Errorf("record at attempt %d; want it run as attempt 2", rec.Attempt)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "pid.1")); err == nil {
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		p, err := os.FindProcess(pid)
		if err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, "the second run of attempt 1 to be killed", func() bool {
			return p.Signal(syscall.Signal(0)) != nil
		})
	}
	for _, m := range stored(t, s.env, subjects.EventSubject("a", "alice", r.ID, subjects.KindLog)) {
		if a := m.Headers().Get(subjects.HeaderAttempt); a != "2" || string(m.Data()) != "attempt 2\n" {
			t.Errorf("stored a line of attempt %s: %q", a, m.Data())
		}
	}
}

// TestLostJobRequeued: a server that restarts after a crash may forget
// that a job was delivered, and never deliver it again, while the job's
// agent is gone. Here a client with an agent's creds holds the job's
// request (it keeps it with InProgress, so the consumer never hands it on)
// after reporting it running, and beats without it, as a restarted agent
// does. The coordinator takes the job for lost and requeues it, and a real
// agent runs it as attempt 2.
func TestLostJobRequeued(t *testing.T) {
	t.Parallel()
	s := newLostCheckSite(t)
	env := s.env
	r := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("echo ran")})

	lost := env.Dial(s.agentCreds)
	var m *nats.Msg
	if _, err := lost.Pull(testenv.Context(t), subjects.JobsStream, subjects.AgentsConsumer("a"), 1, testenv.Timeout, func(got *nats.Msg) error {
		m = got
		return nil
	}); m == nil {
		t.Fatalf("no job fetched: %v", err)
	}
	ev, _ := json.Marshal(subjects.StatusEvent{Job: r.ID, State: subjects.StateRunning, Attempt: 1, Agent: "agent-a", At: time.Now().UTC()})
	if _, err := lost.JS.Publish(testenv.Context(t), subjects.EventSubject("a", "alice", r.ID, subjects.KindStatus), ev); err != nil {
		t.Fatal(err)
	}
	s.waitState(t, r.ID, subjects.StateRunning)
	beat, _ := json.Marshal(subjects.HeartbeatMsg{Agent: "agent-a", Tags: []string{"a"}, Slots: 1, At: time.Now().UTC()})
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = m.InProgress()
			_ = lost.Publish(subjects.HeartbeatSubject("a", "agent-a"), beat)
			select {
			case <-tick.C:
			case <-done:
				return
			}
		}
	}()

	mark := env.Logs.Len()
	env.StartAgent(env.Creds(accounts.RoleAgent, "agent-b", "a"), agent.Config{})
	rec := s.waitState(t, r.ID, subjects.StateSucceeded)
	if rec.Attempt != 2 || rec.Agent != "agent-b" {
		t.Errorf("the lost job ended at attempt %d on %q, want attempt 2 on agent-b", rec.Attempt, rec.Agent)
	}
	if _, ok := env.Logs.Find(mark, func(e testenv.Entry) bool {
		return e.Msg == "job requeued" && e.Attrs["reason"] == "its agent agent-a no longer runs it"
	}); !ok {
		t.Error("the coordinator did not say why it requeued the job")
	}
}

// TestLostRequestRequeued: a server that restarts after a crash may come
// back counting a job's request as delivered when no agent got it. Here
// the request is taken off the queue by hand; the job's record says
// queued, but the tag's consumer has nothing to deliver. The coordinator
// requeues the job, and an agent runs it.
func TestLostRequestRequeued(t *testing.T) {
	t.Parallel()
	s := newLostCheckSite(t)
	env := s.env
	r := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("echo ran")})
	st, err := env.CoordConn.JS.Stream(testenv.Context(t), subjects.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(testenv.Context(t), jetstream.WithPurgeSubject(subjects.JobSubject("a", r.ID))); err != nil {
		t.Fatal(err)
	}
	mark := env.Logs.Len()
	s.startAgent(t)
	rec := s.waitState(t, r.ID, subjects.StateSucceeded)
	if rec.Attempt != 2 {
		t.Errorf("the job ran as attempt %d, want 2", rec.Attempt)
	}
	if _, ok := env.Logs.Find(mark, func(e testenv.Entry) bool {
		return e.Msg == "job requeued" && e.Attrs["reason"] == "its request was lost from the queue"
	}); !ok {
		t.Error("the coordinator did not say why it requeued the job")
	}
}

// newLostCheckSite is a site whose coordinator checks for lost jobs every
// 50 ms, with an ack wait of a second.
func newLostCheckSite(t *testing.T) *site {
	t.Helper()
	return newSiteWith(t, coordinator.Config{Limits: quickLimits(), LostCheck: 50 * time.Millisecond})
}

// TestEndedJobDeliveredAgainIsNotRun: a server killed before it saved a
// finished job's ack (or the coordinator's removal of its request) has the
// request back when it restarts, and delivers it again. Here a client with
// an agent's creds runs the job as attempt 1 (it reports it running and
// succeeded, and the coordinator takes the request off the queue); then
// the request is put back, as the restarted server would have it.
//   - Handed back once more, it comes to the agent as a redelivery.
//   - Put back again after the agent's connection came back from a server
//     restart, it comes as a first delivery.
//
// Either way the agent reads the job's last status, acks the request, and
// runs nothing: the record stays as attempt 1 left it.
func TestEndedJobDeliveredAgainIsNotRun(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	r, dir, other, request := s.heldElsewhere(t)
	other.status(subjects.StateSucceeded)
	s.waitState(t, r.ID, subjects.StateSucceeded)
	testenv.Eventually(t, "the coordinator to take the finished job off the queue", func() bool { return !s.queued(t, r.ID) })
	putBack := func() {
		t.Helper()
		s.putBack(t, request.Subject, request.Data, request.Header)
	}
	skipped := func(mark int) {
		t.Helper()
		s.env.Logs.Wait(t, mark, "the agent to ack the ended job without running it", func(e testenv.Entry) bool {
			return e.Msg == "job handed over again after it ended; acked, not run" && e.Attrs["job"] == r.ID
		})
		testenv.Eventually(t, "the request to be acked", func() bool { return !s.queued(t, r.ID) })
	}

	putBack()
	other.pull(func(m *nats.Msg) error { return m.Nak() })
	mark := s.env.Logs.Len()
	s.startAgent(t)
	skipped(mark)

	s.env.RestartServer()
	mark = s.env.Logs.Len()
	putBack()
	skipped(mark)

	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Error("the ended job ran again")
	}
	rec, err := s.alice.Get(testenv.Context(t), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != subjects.StateSucceeded || rec.Attempt != 1 {
		t.Errorf("record: %s at attempt %d; want succeeded at attempt 1", rec.State, rec.Attempt)
	}

	// An end older than the request's own attempt is not this request's:
	// the coordinator handed the job on as attempt 2 after giving up on a
	// run whose end came later. That request runs.
	var job subjects.Job
	if err := json.Unmarshal(request.Data, &job); err != nil {
		t.Fatal(err)
	}
	job.Attempt = 2
	request.Data, _ = json.Marshal(job)
	mark = s.env.Logs.Len()
	putBack()
	s.env.Logs.Wait(t, mark, "the agent to start attempt 2", func(e testenv.Entry) bool {
		return e.Msg == "job started" && e.Attrs["job"] == r.ID && e.Attrs["attempt"] == "2"
	})
	if _, ok := s.env.Logs.Find(mark, func(e testenv.Entry) bool { return e.Msg == "job handed over again after it ended; acked, not run" }); ok {
		t.Error("attempt 2 was taken for a ghost of attempt 1")
	}
}

// TestSharedSlotsKeepWaitingJobs: an agent of two tags whose slots are all
// held by some of its jobs keeps those that came meanwhile alive until a
// slot frees: none waits out its ack wait, is delivered again, and runs
// twice. The second job of tag b outlasts the first, so a job of b left
// waiting unkept would still be unacked when the first's slot frees and
// the agent pulls again, and be handed over a second time.
func TestSharedSlotsKeepWaitingJobs(t *testing.T) {
	t.Parallel()
	s := newSite(t, quickLimits()) // an ack wait of a second
	s.agentCreds = s.env.Creds(accounts.RoleAgent, "agent-ab", "a", "b")
	bob := s.env.Dial(s.env.Creds(accounts.RoleUser, "bob", "b"))
	s.env.StartAgent(s.agentCreds, agent.Config{Concurrency: 2, StopGrace: testenv.Timeout})
	ctx := testenv.Context(t)
	type job struct {
		by *client.Conn
		id string
	}
	var jobs []job
	for _, j := range []struct {
		by     *client.Conn
		tag    string
		script string
	}{{s.alice, "a", "sleep 3"}, {s.alice, "a", "sleep 3"}, {bob, "b", "sleep 1"}, {bob, "b", "sleep 3"}, {bob, "b", "sleep 1"}} {
		r, err := j.by.Submit(ctx, subjects.JobSpec{Tag: j.tag, Command: sh(j.script)})
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, job{j.by, r.ID})
	}
	for _, j := range jobs {
		var r *subjects.Record
		testenv.Eventually(t, "job "+j.id+" to end", func() bool {
			var err error
			if r, err = j.by.Get(ctx, j.id); err != nil {
				t.Fatal(err)
			}
			return r.State.Terminal()
		})
		if r.State != subjects.StateSucceeded || r.Attempt != 1 {
			t.Errorf("job %s of tag %s ended %s in attempt %d (%s); want succeeded in attempt 1", j.id, r.Tag, r.State, r.Attempt, r.Error)
		}
	}
	// Delivered again even where it did not run again: the consumer counts
	// every delivery.
	for tag, n := range map[string]uint64{"a": 2, "b": 3} {
		c, err := s.env.CoordConn.JS.Consumer(ctx, subjects.JobsStream, subjects.AgentsConsumer(tag))
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Delivered.Consumer; got != n {
			t.Errorf("tag %s: %d deliveries of its %d jobs", tag, got, n)
		}
	}
}

// TestRequestDeliveredAgainWhileItRuns: a server restarted from a state
// older than its deliveries may hand a job's request to the agent that runs
// it, again. The agent leaves it to the run under way, and acks it once
// that run's end is stored: the job runs once.
func TestRequestDeliveredAgainWhileItRuns(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t)
	dir := t.TempDir()
	r := s.submit(t, subjects.JobSpec{Tag: "a", Dir: dir, Command: sh("echo run >> runs; while [ ! -e go ]; do sleep 0.01; done")})
	s.waitState(t, r.ID, subjects.StateRunning)

	ctx := testenv.Context(t)
	st, err := s.env.CoordConn.JS.Stream(ctx, subjects.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	request, err := st.GetLastMsgForSubject(ctx, subjects.JobSubject("a", r.ID))
	if err != nil {
		t.Fatal(err)
	}
	mark := s.env.Logs.Len()
	s.putBack(t, request.Subject, request.Data, request.Header)
	s.env.Logs.Wait(t, mark, "the agent to leave the request delivered again to the run under way", func(e testenv.Entry) bool {
		return e.Msg == "job delivered again while this agent runs it; left to that run" && e.Attrs["job"] == r.ID
	})
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s.waitState(t, r.ID, subjects.StateSucceeded)
	testenv.Eventually(t, "both deliveries of the request to be acked", func() bool { return !s.queued(t, r.ID) })
	if b, err := os.ReadFile(filepath.Join(dir, "runs")); err != nil || string(b) != "run\n" {
		t.Errorf("the job's runs: %q, %v; want one", b, err)
	}
}

// TestEarlierAttemptsEndIsWaitedFor: soon after a reconnect (a server
// restarted from a state older than its deliveries), a request delivered
// again whose earlier attempt shows as running waits a few seconds for that
// attempt's end, which its agent stores once it is back, and is acked
// unrun when it comes.
func TestEarlierAttemptsEndIsWaitedFor(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	r, dir, other, request := s.heldElsewhere(t)
	s.waitState(t, r.ID, subjects.StateRunning)

	// A copy of the request, held too, is what the restarted server will
	// hand over again, as attempt 2.
	s.putBack(t, request.Subject, request.Data, request.Header)
	var again *nats.Msg
	other.pull(func(m *nats.Msg) error { again = m; return nil })

	s.startAgent(t)
	s.env.RestartServer()
	testenv.Eventually(t, "the agents to reconnect", other.conn.IsConnected)
	mark := s.env.Logs.Len()
	if err := again.Nak(); err != nil {
		t.Fatal(err)
	}
	s.env.Logs.Wait(t, mark, "the agent to wait for attempt 1's end", func(e testenv.Entry) bool {
		return e.Msg == "an earlier attempt shows as running, soon after a reconnect; waiting for its end" && e.Attrs["job"] == r.ID
	})
	other.status(subjects.StateSucceeded)
	s.env.Logs.Wait(t, mark, "the agent to ack the request unrun", func(e testenv.Entry) bool {
		return e.Msg == "job handed over again after it ended; acked, not run" && e.Attrs["job"] == r.ID
	})
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Error("the job ran again")
	}
}

// otherAgent is a client with the agent's creds that plays another agent
// of job: it pulls requests, and stores the job's statuses for attempt 1.
type otherAgent struct {
	t    *testing.T
	job  string
	conn *client.Conn
}

func (s *site) otherAgent(t *testing.T, job string) otherAgent {
	return otherAgent{t: t, job: job, conn: s.env.Dial(s.agentCreds)}
}

// pull takes one request of tag a and hands it to fn.
func (o otherAgent) pull(fn func(*nats.Msg) error) {
	o.t.Helper()
	got, err := o.conn.Pull(testenv.Context(o.t), subjects.JobsStream, subjects.AgentsConsumer("a"), 1, testenv.Timeout, fn)
	if got != 1 || err != nil {
		o.t.Fatalf("pulled %d jobs: %v", got, err)
	}
}

// status stores the job's status of attempt 1.
func (o otherAgent) status(state subjects.State) {
	o.t.Helper()
	ev := subjects.StatusEvent{Job: o.job, State: state, Attempt: 1, Agent: "agent-a", At: time.Now().UTC()}
	if state.Terminal() {
		ev.ExitCode = new(int)
	}
	b, _ := json.Marshal(ev)
	m := nats.NewMsg(subjects.EventSubject("a", "alice", o.job, subjects.KindStatus))
	m.Data = b
	m.Header.Set(subjects.HeaderMsgID, subjects.MsgID(o.job, 1, string(state)))
	if _, err := o.conn.JS.PublishMsg(testenv.Context(o.t), m); err != nil {
		o.t.Fatal(err)
	}
}

// heldElsewhere submits a job that touches "ran" in its directory, and has
// another agent take its request, hold it, and store attempt 1 as running.
func (s *site) heldElsewhere(t *testing.T) (r *subjects.Record, dir string, other otherAgent, request *nats.Msg) {
	t.Helper()
	dir = t.TempDir()
	r = s.submit(t, subjects.JobSpec{Tag: "a", Dir: dir, Command: sh("touch ran")})
	other = s.otherAgent(t, r.ID)
	other.pull(func(m *nats.Msg) error { request = m; return nil })
	other.status(subjects.StateRunning)
	return r, dir, other, request
}

// putBack stores a copy of a job request, as a queue that lost track of
// its delivery would hand it over again.
func (s *site) putBack(t *testing.T, subject string, data []byte, header nats.Header) {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(subjects.HeaderAckWait, header.Get(subjects.HeaderAckWait))
	if _, err := s.env.CoordConn.JS.PublishMsg(testenv.Context(t), m); err != nil {
		t.Fatal(err)
	}
}
