package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
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

// site is a coordinator, a user alice of tag a, and the creds of an agent
// of tag a, whose agent each test starts when it wants it.
type site struct {
	env        *testenv.Env
	alice      *client.Conn
	agentCreds string
}

func newSite(t *testing.T, limits coordinator.Limits) *site {
	t.Helper()
	return newSiteWith(t, coordinator.Config{Limits: limits})
}

// quickLimits are the coordinator's defaults with an ack wait of a second,
// for tests that wait one out.
func quickLimits() coordinator.Limits {
	l := coordinator.DefaultLimits
	l.AckWait = time.Second
	return l
}

// newSiteWith is newSite with a coordinator configured by cfg.
func newSiteWith(t *testing.T, cfg coordinator.Config) *site {
	t.Helper()
	env := testenv.New(t)
	env.StartCoordinatorWith(cfg)
	return &site{
		env:        env,
		agentCreds: env.Creds(accounts.RoleAgent, "agent-a", "a"),
		alice:      env.Dial(env.Creds(accounts.RoleUser, "alice", "a")),
	}
}

func (s *site) startAgent(t *testing.T) *agent.Agent {
	t.Helper()
	return s.env.StartAgent(s.agentCreds, agent.Config{Concurrency: 2, StopGrace: testenv.Timeout})
}

func (s *site) submit(t *testing.T, spec subjects.JobSpec) *subjects.Record {
	t.Helper()
	r, err := s.alice.Submit(testenv.Context(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitState waits for the job's record to reach state.
func (s *site) waitState(t *testing.T, id string, state subjects.State) *subjects.Record {
	t.Helper()
	var r *subjects.Record
	ctx := testenv.Context(t)
	testenv.Eventually(t, "job "+id+" to be "+string(state), func() bool {
		var err error
		r, err = s.alice.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.State.Terminal() && r.State != state {
			t.Fatalf("job ended %s (%s), want %s", r.State, r.Error, state)
		}
		return r.State == state
	})
	return r
}

// queued reports whether the job's request is still in the jobs stream,
// which a work queue keeps until it is acked.
func (s *site) queued(t *testing.T, id string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Timeout)
	defer cancel()
	st, err := s.env.CoordConn.JS.Stream(ctx, subjects.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.GetLastMsgForSubject(ctx, subjects.JobSubject("a", id))
	if err == nil {
		return true
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatal(err)
	}
	return false
}

func (s *site) output(t *testing.T, id string) (stdout, stderr string, states []subjects.State) {
	t.Helper()
	var out, errs strings.Builder
	err := s.alice.ReadEvents(testenv.Context(t), id, client.ReadOptions{}, func(e client.Event) error {
		if e.Status != nil {
			states = append(states, e.Status.State)
			return nil
		}
		data := e.Log.Data
		if e.Log.Partial {
			data = data[:len(data)-1] // the line goes on in the next message
		}
		if e.Log.Stream == subjects.StreamStderr {
			errs.Write(data)
		} else {
			out.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), errs.String(), states
}

func sh(script string) []string { return []string{"sh", "-c", script} }

func TestJobRuns(t *testing.T) {
	t.Setenv("OUTPOST_TEST_AGENT_SECRET", "must-not-leak")
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t)
	r := s.submit(t, subjects.JobSpec{Tag: "a", Env: map[string]string{"GREETING": "hi"}, Stdin: "from stdin\n", Dir: "sub",
		Command: sh(`echo "$GREETING"; echo oops >&2; cat; pwd; env | sort; printf 'no newline'`)})
	rec := s.waitState(t, r.ID, subjects.StateSucceeded)
	if rec.ExitCode == nil || *rec.ExitCode != 0 || rec.Agent != "agent-a" || rec.StartedAt == nil || rec.FinishedAt == nil {
		t.Errorf("record %+v", rec)
	}
	stdout, stderr, states := s.output(t, r.ID)
	if stderr != "oops\n" {
		t.Errorf("stderr %q", stderr)
	}
	if !strings.HasPrefix(stdout, "hi\nfrom stdin\n") || !strings.HasSuffix(stdout, "no newline\n") {
		t.Errorf("stdout %q", stdout)
	}
	if !regexp.MustCompile(`/run-\d+-[0-9a-f]{32}/sub\n`).MatchString(stdout) {
		t.Errorf("the job did not run in its own work directory: %q", stdout)
	}
	for _, want := range []string{"OUTPOST_JOB_ID=" + r.ID + "\n", "OUTPOST_ATTEMPT=1\n", "OUTPOST_TAG=a\n", "GREETING=hi\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the job's environment lacks %q", want)
		}
	}
	if strings.Contains(stdout, "must-not-leak") {
		t.Error("the agent's environment leaked into the job")
	}
	want := []subjects.State{subjects.StateQueued, subjects.StateRunning, subjects.StateSucceeded}
	if strings.Join(names(states), ",") != strings.Join(names(want), ",") {
		t.Errorf("states %v, want %v", states, want)
	}
	if s.queued(t, r.ID) {
		t.Error("a finished job is still queued")
	}

	// Failures carry the code and a reason.
	for _, tc := range []struct {
		cmd  []string
		code int
		why  string
	}{
		{sh("exit 3"), 3, "exit status 3"},
		{[]string{"outpost-no-such-command"}, 127, "command not found"},
	} {
		r := s.submit(t, subjects.JobSpec{Tag: "a", Command: tc.cmd})
		rec := s.waitState(t, r.ID, subjects.StateFailed)
		if rec.ExitCode == nil || *rec.ExitCode != tc.code || !strings.Contains(rec.Error, tc.why) {
			t.Errorf("%v: exit %v error %q", tc.cmd, rec.ExitCode, rec.Error)
		}
	}
}

// TestConcurrencyBoundsProcesses: an agent runs the processes of at most
// its concurrency's jobs at once, though it pulls the next job while it
// stores the end of the last. Each job counts the jobs whose marker is in
// a shared directory, its own included, and takes its marker away before
// it exits.
func TestConcurrencyBoundsProcesses(t *testing.T) {
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t) // concurrency 2
	shared := t.TempDir()
	var ids []string
	for range 8 {
		r := s.submit(t, subjects.JobSpec{Tag: "a", Env: map[string]string{"D": shared},
			Command: sh(`f="$D/$OUTPOST_JOB_ID"; touch "$f"; ls "$D" | wc -l; sleep 0.1; rm "$f"`)})
		ids = append(ids, r.ID)
	}
	most := 0
	for _, id := range ids {
		s.waitState(t, id, subjects.StateSucceeded)
		out, _, _ := s.output(t, id)
		n, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("job %s printed %q, not a count", id, out)
		}
		most = max(most, n)
	}
	t.Logf("at most %d jobs ran at once", most)
	if most > 2 {
		t.Errorf("%d jobs ran at once on an agent of concurrency 2", most)
	}
}

func names(ss []subjects.State) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return out
}

// The agent acks a job only after its terminal status is stored: while the
// events stream refuses the status, the ended job stays unacked in the
// queue; once the stream takes it, the job is acked.
func TestTerminalStatusStoredBeforeAck(t *testing.T) {
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t)
	dir := t.TempDir()
	r := s.submit(t, subjects.JobSpec{Tag: "a", Dir: dir, Command: sh(`while [ ! -e go ]; do sleep 0.01; done; touch done`)})
	s.waitState(t, r.ID, subjects.StateRunning)

	ctx := testenv.Context(t)
	js := s.env.CoordConn.JS
	st, err := js.Stream(ctx, subjects.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The events stream is full and refuses anything new.
	full := info.Config
	full.Discard, full.MaxMsgs = jetstream.DiscardNew, int64(info.State.Msgs)
	if _, err := js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	// Should the test fail, the agent must still be able to finish.
	t.Cleanup(func() { _, _ = js.UpdateStream(context.Background(), info.Config) })
	mark := s.env.Logs.Len()
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	status := subjects.EventSubject("a", "alice", r.ID, subjects.KindStatus)
	s.env.Logs.Wait(t, mark, "the agent to fail to store the terminal status", func(e testenv.Entry) bool {
		return e.Msg == "publish failed; retrying" && e.Attrs["subject"] == status
	})
	if _, err := os.Stat(filepath.Join(dir, "done")); err != nil {
		t.Fatalf("the job has not ended: %v", err)
	}
	if !s.queued(t, r.ID) {
		t.Fatal("the job was acked before its terminal status was stored")
	}
	cons, err := js.Consumer(ctx, subjects.JobsStream, subjects.AgentsConsumer("a"))
	if err != nil {
		t.Fatal(err)
	}
	if ci, err := cons.Info(ctx); err != nil || ci.NumAckPending != 1 {
		t.Errorf("consumer: %+v, %v", ci, err)
	}

	if _, err := js.UpdateStream(ctx, info.Config); err != nil {
		t.Fatal(err)
	}
	s.waitState(t, r.ID, subjects.StateSucceeded)
	testenv.Eventually(t, "the job to be acked", func() bool { return !s.queued(t, r.ID) })
}

// A job delivered more often than max_attempts allows ends failed without
// running again. A plain consumer client with the agent's creds takes the
// first delivery and vanishes; after the ack wait the real agent gets the
// second.
func TestMaxAttempts(t *testing.T) {
	t.Parallel()
	s := newSite(t, quickLimits())
	dir := t.TempDir()
	r := s.submit(t, subjects.JobSpec{Tag: "a", Dir: dir, MaxAttempts: 1, Command: sh("touch ran")})

	lost := s.env.Dial(s.agentCreds)
	got, err := lost.Pull(testenv.Context(t), subjects.JobsStream, subjects.AgentsConsumer("a"), 1, testenv.Timeout, func(m *nats.Msg) error {
		if meta, _ := m.Metadata(); meta == nil || meta.NumDelivered != 1 || m.Subject != subjects.JobSubject("a", r.ID) {
			t.Fatalf("fetched %s %+v", m.Subject, meta)
		}
		return nil // and never acked
	})
	if got != 1 {
		t.Fatalf("fetched %d jobs: %v", got, err)
	}

	s.startAgent(t)
	rec := s.waitState(t, r.ID, subjects.StateFailed)
	if rec.Attempt != 2 || !strings.Contains(rec.Error, "max_attempts") || rec.Agent != "agent-a" {
		t.Errorf("record: attempt %d agent %q error %q", rec.Attempt, rec.Agent, rec.Error)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Error("the job ran past its max_attempts")
	}
	testenv.Eventually(t, "the job to be acked", func() bool { return !s.queued(t, r.ID) })
}

func TestStopRunningJob(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t)
	for _, tc := range []struct {
		force bool
		code  int
	}{{false, 128 + 15}, {true, 128 + 9}} {
		r := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("exec sleep 600")})
		s.waitState(t, r.ID, subjects.StateRunning)
		got, err := s.alice.Stop(testenv.Context(t), subjects.StopRequest{ID: r.ID, Force: tc.force})
		if err != nil {
			t.Fatal(err)
		}
		if got.State != subjects.StateRunning || !got.StopRequested {
			t.Errorf("stop answered %s, stop requested %v", got.State, got.StopRequested)
		}
		rec := s.waitState(t, r.ID, subjects.StateStopped)
		if rec.ExitCode == nil || *rec.ExitCode != tc.code {
			t.Errorf("force %v: exit code %v, want %d", tc.force, rec.ExitCode, tc.code)
		}
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	s.env.StartAgent(s.agentCreds, agent.Config{StopGrace: 50 * time.Millisecond})
	r := s.submit(t, subjects.JobSpec{Tag: "a", Timeout: subjects.Duration(200 * time.Millisecond),
		Command: sh("trap '' TERM; while :; do sleep 0.05; done")})
	rec := s.waitState(t, r.ID, subjects.StateTimedOut)
	if rec.ExitCode == nil || *rec.ExitCode != 128+9 || !strings.Contains(rec.Error, "timeout") {
		t.Errorf("exit %v error %q (a job that ignores SIGTERM is killed after the grace)", rec.ExitCode, rec.Error)
	}
}

// The agent obeys a stop request only from the coordinator's inbox: a
// control message with any other reply subject, or none, is ignored, even
// on the right subject and published with the coordinator's own creds.
func TestControlOutsideCoordinatorInboxIgnored(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t)
	r := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("exec sleep 600")})
	s.waitState(t, r.ID, subjects.StateRunning)
	stop, _ := json.Marshal(subjects.ControlMsg{Action: subjects.ActionStop, Job: r.ID, Force: true})
	for _, reply := range []string{"", "_INBOX_admin.x", "_INBOX_alice.ctl", "_INBOX_coordinatorx.ctl", "_INBOX_coordinator", "outpost.ctl.a.x"} {
		mark := s.env.Logs.Len()
		m := &nats.Msg{Subject: subjects.ControlSubject("a", r.ID), Reply: reply, Data: stop}
		if err := s.env.CoordConn.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		s.env.Logs.Wait(t, mark, "the agent to ignore the stop with reply "+reply, func(e testenv.Entry) bool {
			return e.Msg == "ignored control message" && e.Attrs["reply"] == reply
		})
	}
	// From the right inbox, but naming another job, or another action.
	for _, body := range []subjects.ControlMsg{
		{Action: subjects.ActionStop, Job: "01jd7x3k9q8r6t5v4w3y2z1a0b", Force: true},
		{Action: "kill", Job: r.ID, Force: true},
	} {
		mark := s.env.Logs.Len()
		b, _ := json.Marshal(body)
		m := &nats.Msg{Subject: subjects.ControlSubject("a", r.ID), Reply: subjects.Inbox(subjects.CoordinatorName) + ".x", Data: b}
		if err := s.env.CoordConn.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		s.env.Logs.Wait(t, mark, "the agent to ignore a malformed stop", func(e testenv.Entry) bool {
			return e.Msg == "ignored malformed control message"
		})
	}
	if rec, err := s.alice.Get(testenv.Context(t), r.ID); err != nil || rec.State != subjects.StateRunning {
		t.Fatalf("after ignored stops the job is %v, %v", rec, err)
	}
	// The real thing works.
	m := &nats.Msg{Subject: subjects.ControlSubject("a", r.ID), Reply: subjects.Inbox(subjects.CoordinatorName) + ".x", Data: stop}
	if err := s.env.CoordConn.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	s.waitState(t, r.ID, subjects.StateStopped)
}

// A reader may have the server deliver stored events to any subject, as
// the reply of a pull request (NATS-NOTES point 5). Alice's job prints a
// stop request for itself, and alice has her reader consumer deliver the
// stored line onto the job's control subject. That subject is read in
// alice's own account, where no agent listens: the job runs on.
func TestRedirectedEventsAreNotStops(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t)
	r := s.submit(t, subjects.JobSpec{Tag: "a",
		Command: sh(`echo "{\"action\":\"stop\",\"job\":\"$OUTPOST_JOB_ID\",\"force\":true}"; exec sleep 600`)})
	s.waitState(t, r.ID, subjects.StateRunning)
	logSubject := subjects.EventSubject("a", "alice", r.ID, subjects.KindLog)
	st, err := s.env.CoordConn.JS.Stream(testenv.Context(t), subjects.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t)
	testenv.Eventually(t, "the job's line to be stored", func() bool {
		_, err := st.GetLastMsgForSubject(ctx, logSubject)
		return err == nil
	})

	nc := s.alice.Conn
	rm, err := nc.Request(subjects.APISubject("alice", subjects.VerbRead), []byte(`{"job":"`+r.ID+`"}`), testenv.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	var reply subjects.Reply
	if err := json.Unmarshal(rm.Data, &reply); err != nil || reply.Reader == nil {
		t.Fatalf("read: %s, %v", rm.Data, err)
	}
	mark := s.env.Logs.Len()
	next := &nats.Msg{Subject: "$JS.API.CONSUMER.MSG.NEXT." + subjects.EventsStream + "." + reply.Reader.Consumer,
		Reply: subjects.ControlSubject("a", r.ID), Data: []byte(`{"batch":10,"no_wait":true}`)}
	if err := nc.PublishMsg(next); err != nil {
		t.Fatal(err)
	}
	// The consumer answers pulls in order: once a second pull finds it
	// drained, the redirected one has been delivered wherever it went.
	testenv.Eventually(t, "the redirected pull to drain the consumer", func() bool {
		n, err := s.alice.Pull(ctx, subjects.EventsStream, reply.Reader.Consumer, 10, 0, func(*nats.Msg) error { return nil })
		return err == nil && n == 0
	})
	if s.alice.Denied() != nil {
		t.Fatalf("the redirect was refused: %v", s.alice.Denied())
	}
	if e, ok := s.env.Logs.Find(mark, func(e testenv.Entry) bool { return strings.Contains(e.Msg, "control message") }); ok {
		t.Errorf("a redirected event reached the agent: %q %v", e.Msg, e.Attrs)
	}
	if rec, err := s.alice.Get(testenv.Context(t), r.ID); err != nil || rec.State != subjects.StateRunning {
		t.Fatalf("the redirected line stopped the job: %v, %v", rec, err)
	}
	if _, err := s.alice.Stop(testenv.Context(t), subjects.StopRequest{ID: r.ID, Force: true}); err != nil {
		t.Fatal(err)
	}
	s.waitState(t, r.ID, subjects.StateStopped)
}

// TestAgentDoesNotImportServer keeps the promise of the package comment:
// the agent binary carries no NATS server.
func TestAgentDoesNotImportServer(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(gobin, "list", "-deps", "github.com/outpost-run/outpost/agent", "github.com/outpost-run/outpost/cmd/agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/nats-io/nats-server") || p == "github.com/outpost-run/outpost/coordinator" {
			t.Errorf("the agent depends on %s", p)
		}
	}
}

// startHook calls onStart, in the agent's own goroutine, when the agent
// logs that a job started: while its running status is on its way and
// before its process exists.
type startHook struct {
	slog.Handler
	attrs   []slog.Attr
	onStart func(job string)
}

func (h startHook) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "job started" {
		for _, a := range h.attrs {
			if a.Key == "job" {
				h.onStart(a.Value.String())
			}
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h startHook) WithAttrs(as []slog.Attr) slog.Handler {
	return startHook{Handler: h.Handler.WithAttrs(as), attrs: append(slices.Clone(h.attrs), as...), onStart: h.onStart}
}

func (h startHook) WithGroup(name string) slog.Handler {
	return startHook{Handler: h.Handler.WithGroup(name), attrs: h.attrs, onStart: h.onStart}
}

// A stop that arrives after the job is taken but before its process is
// started is not lost.
func TestStopWhileStarting(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	hook := startHook{Handler: s.env.Logs.Logger().Handler(), onStart: func(job string) {
		stop, _ := json.Marshal(subjects.ControlMsg{Action: subjects.ActionStop, Job: job})
		inbox := subjects.Inbox(subjects.CoordinatorName) + ".x"
		mark := s.env.Logs.Len()
		_ = s.env.CoordConn.PublishMsg(&nats.Msg{Subject: subjects.ControlSubject("a", job), Reply: inbox, Data: stop})
		// A control message the agent ignores, and logs: once it has, the
		// stop before it was handled too.
		_ = s.env.CoordConn.PublishMsg(&nats.Msg{Subject: subjects.ControlSubject("a", job), Reply: "marker", Data: stop})
		deadline := time.Now().Add(testenv.Timeout)
		for time.Now().Before(deadline) {
			if _, ok := s.env.Logs.Find(mark, func(e testenv.Entry) bool { return e.Attrs["reply"] == "marker" }); ok {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}}
	s.env.StartAgent(s.agentCreds, agent.Config{Logger: slog.New(hook), StopGrace: testenv.Timeout})
	r := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("exec sleep 600")})
	rec := s.waitState(t, r.ID, subjects.StateStopped)
	if rec.ExitCode == nil || *rec.ExitCode != 128+15 {
		t.Errorf("exit code %v", rec.ExitCode)
	}
}

// TestIdlePullSurvivesServerRestart: an idle agent's pull request waits at
// the server for minutes, and a restarted server has forgotten it. The
// agent must ask again as soon as it reconnects, or it would sit deaf for
// the rest of the wait with jobs queued.
func TestIdlePullSurvivesServerRestart(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t)
	waiting := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := s.env.CoordConn.JS.Consumer(ctx, subjects.JobsStream, subjects.AgentsConsumer("a"))
		if err != nil {
			return -1 // reconnecting
		}
		info, err := c.Info(ctx)
		if err != nil {
			return -1
		}
		return info.NumWaiting
	}
	testenv.Eventually(t, "the agent's pull request to wait at the server", func() bool { return waiting() == 1 })
	s.env.RestartServer()
	testenv.Eventually(t, "the agent to pull again after the restart", func() bool { return waiting() == 1 })
	rec := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("echo back")})
	s.waitState(t, rec.ID, subjects.StateSucceeded)
}

// An agent beats when it starts and again as soon as it reconnects, and
// says the longest it lets pass between beats: its idle cadence, which is
// what the coordinator counts it online by.
func TestHeartbeats(t *testing.T) {
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	next := s.heartbeats(t)
	// An hour between ticks: every beat the test sees has another cause.
	conn := s.env.Dial(s.agentCreds)
	s.env.StartAgent(s.agentCreds, agent.Config{Conn: conn, Heartbeat: time.Hour})
	if hb := next("the first beat"); hb.Every != subjects.Duration(3*time.Hour) || len(hb.Running) != 0 {
		t.Errorf("first beat: every %v, running %v; want 3h and nothing", time.Duration(hb.Every), hb.Running)
	}
	if err := conn.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	next("a beat on reconnecting")
}

// heartbeats listens to agent-a's heartbeats from now on; next waits for
// the next one, what it is waited for naming it in a failure.
func (s *site) heartbeats(t *testing.T) (next func(what string) subjects.HeartbeatMsg) {
	t.Helper()
	beats, err := s.env.CoordConn.SubscribeSync(subjects.HeartbeatSubject("a", "agent-a"))
	if err != nil {
		t.Fatal(err)
	}
	return func(what string) subjects.HeartbeatMsg {
		t.Helper()
		m, err := beats.NextMsg(testenv.Timeout)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var hb subjects.HeartbeatMsg
		if err := json.Unmarshal(m.Data, &hb); err != nil {
			t.Fatalf("%s: %s: %v", what, m.Data, err)
		}
		return hb
	}
}
