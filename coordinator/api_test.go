package coordinator_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

const ghost = "01jd7x3k9q8r6t5v4w3y2z1a0b" // a job ID no record has

// world is a coordinator with agent credentials for tags a and b (but no
// agent running, so jobs stay queued), users alice and bob of tag a, and an
// admin.
type world struct {
	env               *testenv.Env
	alice, bob, admin *client.Conn
	agentA, agentB    *client.Conn
}

func newWorld(t *testing.T) *world {
	t.Helper()
	env := testenv.New(t)
	env.StartCoordinator(coordinator.Limits{})
	return &world{
		env:    env,
		agentA: env.Dial(env.Creds(accounts.RoleAgent, "agent-a", "a")),
		agentB: env.Dial(env.Creds(accounts.RoleAgent, "agent-b", "b")),
		alice:  env.Dial(env.Creds(accounts.RoleUser, "alice", "a")),
		bob:    env.Dial(env.Creds(accounts.RoleUser, "bob", "a")),
		admin:  env.Dial(env.Creds(accounts.RoleAdmin, "admin")),
	}
}

func spec(tag string) subjects.JobSpec {
	return subjects.JobSpec{Tag: tag, Command: []string{"echo", "hi"}}
}

func submit(t *testing.T, c *client.Conn, s subjects.JobSpec) *subjects.Record {
	t.Helper()
	r, err := c.Submit(testenv.Context(t), s)
	if err != nil {
		t.Fatalf("submit as %s: %v", c.Identity.Name, err)
	}
	return r
}

func wantCode(t *testing.T, err error, code subjects.Code) {
	t.Helper()
	var apiErr *subjects.Error
	if !errors.As(err, &apiErr) || apiErr.Code != code {
		t.Fatalf("got %v, want an API error %s", err, code)
	}
	if apiErr.Message == "" {
		t.Errorf("%s without a message", code)
	}
}

// record reads a job's record straight from the bucket.
func (w *world) record(t *testing.T, id string) subjects.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Timeout)
	defer cancel()
	kv, err := w.env.CoordConn.JS.KeyValue(ctx, subjects.JobsBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, id)
	if err != nil {
		t.Fatalf("record %s: %v", id, err)
	}
	var r subjects.Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func (w *world) jobQueued(t *testing.T, tag, id string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Timeout)
	defer cancel()
	s, err := w.env.CoordConn.JS.Stream(ctx, subjects.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.GetLastMsgForSubject(ctx, subjects.JobSubject(tag, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

func TestSubmitGetList(t *testing.T) {
	w := newWorld(t)
	r := submit(t, w.alice, subjects.JobSpec{Tag: "a", Command: []string{"true"}, Env: map[string]string{"X": "1"}})
	if subjects.ValidJobID(r.ID) != nil || r.Owner != "alice" || r.State != subjects.StateQueued || r.Attempt != 1 ||
		r.MaxAttempts != subjects.DefaultMaxAttempts || r.SubmittedAt.IsZero() {
		t.Errorf("submitted %+v", r)
	}
	if !w.jobQueued(t, "a", r.ID) {
		t.Error("the job is not in the jobs stream")
	}
	got, err := w.alice.Get(testenv.Context(t), r.ID)
	if err != nil || got.ID != r.ID || got.Env["X"] != "1" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	r2 := submit(t, w.alice, spec("a"))
	list, err := w.alice.List(testenv.Context(t), subjects.ListRequest{})
	if err != nil || len(list) != 2 || list[0].ID != r2.ID || list[1].ID != r.ID {
		t.Fatalf("list = %v, %v (want newest first)", list, err)
	}
	list, err = w.alice.List(testenv.Context(t), subjects.ListRequest{Limit: 1})
	if err != nil || len(list) != 1 || list[0].ID != r2.ID {
		t.Errorf("list with limit 1 = %v, %v", list, err)
	}
	list, err = w.alice.List(testenv.Context(t), subjects.ListRequest{State: subjects.StateRunning})
	if err != nil || len(list) != 0 {
		t.Errorf("list of running jobs = %v, %v", list, err)
	}
	// Admins submit to any tag that has agents.
	submit(t, w.admin, spec("b"))
}

func TestUnknownName(t *testing.T) {
	w := newWorld(t)
	// Signed by the right key, so the server lets it in, but never
	// registered with the coordinator.
	c, err := w.env.Auth.Issue(accounts.Request{Name: "stranger", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := w.env.Auth.SaveCreds("stranger", c.Creds)
	if err != nil {
		t.Fatal(err)
	}
	stranger := w.env.Dial(p)
	_, err = stranger.Submit(testenv.Context(t), spec("a"))
	wantCode(t, err, subjects.CodeUnknownName)
	_, err = stranger.List(testenv.Context(t), subjects.ListRequest{})
	wantCode(t, err, subjects.CodeUnknownName)
}

func TestSubmitChecksTag(t *testing.T) {
	w := newWorld(t)
	_, err := w.alice.Submit(testenv.Context(t), spec("b"))
	wantCode(t, err, subjects.CodeForbidden)
	_, err = w.alice.Submit(testenv.Context(t), spec("nobody-serves"))
	wantCode(t, err, subjects.CodeForbidden)
	_, err = w.admin.Submit(testenv.Context(t), spec("nobody-serves"))
	wantCode(t, err, subjects.CodeUnknownTag)
	list, err := w.admin.List(testenv.Context(t), subjects.ListRequest{})
	if err != nil || len(list) != 0 {
		t.Errorf("refused submits left records: %v, %v", list, err)
	}
}

func TestOtherUsersJobIsNotFound(t *testing.T) {
	w := newWorld(t)
	r := submit(t, w.bob, spec("a"))
	_, errOther := w.alice.Get(testenv.Context(t), r.ID)
	wantCode(t, errOther, subjects.CodeNotFound)
	_, errMissing := w.alice.Get(testenv.Context(t), ghost)
	wantCode(t, errMissing, subjects.CodeNotFound)
	// The two answers differ only by the ID, so IDs cannot be probed.
	if strings.ReplaceAll(errOther.Error(), r.ID, ghost) != errMissing.Error() {
		t.Errorf("another's job: %q; a missing job: %q", errOther, errMissing)
	}
	_, err := w.alice.Stop(testenv.Context(t), subjects.StopRequest{ID: r.ID})
	wantCode(t, err, subjects.CodeNotFound)
	list, err := w.alice.List(testenv.Context(t), subjects.ListRequest{Owner: "bob"})
	if err != nil || len(list) != 0 {
		t.Errorf("alice lists bob's jobs: %v, %v", list, err)
	}
	if got := w.record(t, r.ID); got.State != subjects.StateQueued || got.StopRequested {
		t.Errorf("alice's stop changed bob's job: %+v", got)
	}
	if !w.jobQueued(t, "a", r.ID) {
		t.Error("alice's stop took bob's job off the queue")
	}
	// Admins see it.
	if got, err := w.admin.Get(testenv.Context(t), r.ID); err != nil || got.Owner != "bob" {
		t.Errorf("admin get = %+v, %v", got, err)
	}
}

func TestBadRequests(t *testing.T) {
	w := newWorld(t)
	nc := w.alice.Conn
	for _, tc := range []struct {
		verb, body string
		code       subjects.Code
	}{
		{subjects.VerbSubmit, `{"tag":"a","comand":["x"]}`, subjects.CodeBadRequest},
		{subjects.VerbSubmit, `{"tag":"a","command":["x"]}}`, subjects.CodeBadRequest},
		{subjects.VerbSubmit, `not json`, subjects.CodeBadRequest},
		{subjects.VerbSubmit, `{"tag":"a","command":["x"],"stdin":"` + strings.Repeat("x", subjects.MaxSubmitBytes) + `"}`, subjects.CodeTooLarge},
		{subjects.VerbGet, `{"id":"NOT-AN-ID"}`, subjects.CodeBadRequest},
		{subjects.VerbGet, `{"id":"` + ghost + `","x":1}`, subjects.CodeBadRequest},
		{subjects.VerbGet, ``, subjects.CodeBadRequest},
		{subjects.VerbList, `{"state":"done"}`, subjects.CodeBadRequest},
		{subjects.VerbList, `{"tag":"A.B"}`, subjects.CodeBadRequest},
		{subjects.VerbList, `{"owner":"*"}`, subjects.CodeBadRequest},
		{subjects.VerbStop, `{"id":"x"}`, subjects.CodeBadRequest},
	} {
		m, err := nc.Request(subjects.APISubject("alice", tc.verb), []byte(tc.body), testenv.Timeout)
		if err != nil {
			t.Fatalf("%s %.40s: %v", tc.verb, tc.body, err)
		}
		var r subjects.Reply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("reply %q: %v", m.Data, err)
		}
		if r.Error == nil || r.Error.Code != tc.code || r.Job != nil || r.Jobs != nil {
			t.Errorf("%s %.40s: reply %s, want %s", tc.verb, tc.body, m.Data, tc.code)
		}
	}
}

// A request's reply subject is read in the requester's own account, so
// aiming it at a subject of the events stream stores nothing; a message on
// an API subject without a reply (such as a redirected one) is dropped.
func TestRequestRepliesStayInTheRequestersAccount(t *testing.T) {
	w := newWorld(t)
	nc := w.alice.Conn
	forged := subjects.EventSubject("a", "alice", ghost, subjects.KindStatus)
	for _, reply := range []string{forged, ""} {
		mark := w.env.Logs.Len()
		m := &nats.Msg{Subject: subjects.APISubject("alice", subjects.VerbGet), Reply: reply,
			Data: []byte(`{"id":"` + ghost + `"}`)}
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		w.env.Logs.Wait(t, mark, "the request with reply "+reply+" to be handled", func(e testenv.Entry) bool {
			return (reply == "" && e.Msg == "api request dropped") || (reply != "" && e.Msg == "api request refused" && e.Attrs["verb"] == subjects.VerbGet)
		})
	}
	s, err := w.env.CoordConn.JS.Stream(testenv.Context(t), subjects.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLastMsgForSubject(testenv.Context(t), forged); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("something was stored on %s: %v", forged, err)
	}
}

func TestStopQueuedJob(t *testing.T) {
	w := newWorld(t)
	watch, err := w.env.CoordConn.SubscribeSync(subjects.ControlFilter("a"))
	if err != nil {
		t.Fatal(err)
	}
	r := submit(t, w.alice, spec("a"))
	got, err := w.alice.Stop(testenv.Context(t), subjects.StopRequest{ID: r.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got.State != subjects.StateStopped || got.FinishedAt == nil || !strings.Contains(got.Error, "alice") {
		t.Errorf("stopped record %+v", got)
	}
	if rec := w.record(t, r.ID); rec.State != subjects.StateStopped {
		t.Errorf("stored record is %s", rec.State)
	}
	if w.jobQueued(t, "a", r.ID) {
		t.Error("the stopped job is still in the jobs stream")
	}
	// The agents are told anyway, from the coordinator's inbox.
	m, err := watch.NextMsg(testenv.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	var ctl subjects.ControlMsg
	if err := json.Unmarshal(m.Data, &ctl); err != nil || ctl.Job != r.ID || ctl.Action != subjects.ActionStop ||
		m.Subject != subjects.ControlSubject("a", r.ID) || !subjects.InInbox(m.Reply, subjects.CoordinatorName) {
		t.Errorf("control message %s reply %q: %s", m.Subject, m.Reply, m.Data)
	}
	// The stop is in the job's history.
	s, err := w.env.CoordConn.JS.Stream(testenv.Context(t), subjects.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.GetLastMsgForSubject(testenv.Context(t), subjects.EventSubject("a", "alice", r.ID, subjects.KindStatus))
	if err != nil {
		t.Fatal(err)
	}
	var ev subjects.StatusEvent
	if err := json.Unmarshal(last.Data, &ev); err != nil || ev.State != subjects.StateStopped {
		t.Errorf("last status %s", last.Data)
	}
	_, err = w.alice.Stop(testenv.Context(t), subjects.StopRequest{ID: r.ID})
	wantCode(t, err, subjects.CodeConflict)

	// An agent that started it anyway, having fetched it a moment before,
	// is told again to stop, and the record stays stopped.
	running, _ := json.Marshal(subjects.StatusEvent{Job: r.ID, State: subjects.StateRunning, Attempt: 1, Agent: "agent-a"})
	if _, err := w.agentA.JS.Publish(testenv.Context(t), subjects.EventSubject("a", "alice", r.ID, subjects.KindStatus), running); err != nil {
		t.Fatal(err)
	}
	m, err = watch.NextMsg(testenv.Timeout)
	if err != nil {
		t.Fatalf("no second stop: %v", err)
	}
	if m.Subject != subjects.ControlSubject("a", r.ID) {
		t.Errorf("second stop on %s", m.Subject)
	}
	if rec := w.record(t, r.ID); rec.State != subjects.StateStopped {
		t.Errorf("a late running event changed the stopped job to %s", rec.State)
	}
}

// Status events are checked against their subject and the record before
// they count: the tag and owner of the subject must be the record's, the
// body must parse and name the subject's job, and attempts are fenced.
func TestStatusEventsFenced(t *testing.T) {
	w := newWorld(t)
	r := submit(t, w.alice, spec("a"))
	ctx := testenv.Context(t)
	publish := func(c *client.Conn, subject string, data []byte) {
		t.Helper()
		if _, err := c.JS.Publish(ctx, subject, data); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
	}
	status := func(state subjects.State, attempt, code int) []byte {
		b, _ := json.Marshal(subjects.StatusEvent{Job: r.ID, State: state, Attempt: attempt, Agent: "agent-a", ExitCode: &code})
		return b
	}
	own := subjects.EventSubject("a", "alice", r.ID, subjects.KindStatus)
	// Each of these would end the job if it counted.
	publish(w.agentA, subjects.EventSubject("a", "bob", r.ID, subjects.KindStatus), status(subjects.StateSucceeded, 1, 0))
	publish(w.agentB, subjects.EventSubject("b", "alice", r.ID, subjects.KindStatus), status(subjects.StateSucceeded, 1, 0))
	publish(w.agentA, own, []byte(`{"job":"`+r.ID+`","state":"succeeded",`))
	publish(w.agentA, own, []byte(`{"job":"`+ghost+`","state":"succeeded","attempt":1}`))
	publish(w.agentA, own, []byte(`{"state":"succeeded","attempt":1}`))
	// An agent's forged queued state, or an attempt past max_attempts (3),
	// would park the job where no real event could reach it.
	publish(w.agentA, own, status(subjects.StateQueued, 99, 0))
	publish(w.agentA, own, status(subjects.StateRunning, 4, 0))
	// Then a new attempt, a stale end of the old one, and the new one's end.
	publish(w.agentA, own, status(subjects.StateRunning, 2, 0))
	publish(w.agentA, own, status(subjects.StateSucceeded, 1, 0))
	publish(w.agentA, own, status(subjects.StateFailed, 2, 7))

	var rec subjects.Record
	testenv.Eventually(t, "the job to end", func() bool {
		rec = w.record(t, r.ID)
		return rec.State.Terminal()
	})
	if rec.State != subjects.StateFailed || rec.Attempt != 2 || rec.ExitCode == nil || *rec.ExitCode != 7 {
		t.Errorf("record ended %s attempt %d exit %v; a bad event counted", rec.State, rec.Attempt, rec.ExitCode)
	}
	for _, msg := range []string{"dropped malformed status event"} {
		if _, ok := w.env.Logs.Find(0, func(e testenv.Entry) bool { return e.Msg == msg }); !ok {
			t.Errorf("no %q logged", msg)
		}
	}
	// Terminal now: nothing moves it.
	publish(w.agentA, own, status(subjects.StateRunning, 3, 0))
	publish(w.agentA, own, status(subjects.StateSucceeded, 3, 0))
	mark := w.env.Logs.Len()
	// A marker job's change shows the consumer got past the events above.
	r2 := submit(t, w.alice, spec("a"))
	publish(w.agentA, subjects.EventSubject("a", "alice", r2.ID, subjects.KindStatus),
		func() []byte {
			b, _ := json.Marshal(subjects.StatusEvent{Job: r2.ID, State: subjects.StateRunning, Attempt: 1})
			return b
		}())
	w.env.Logs.Wait(t, mark, "the marker job to run", func(e testenv.Entry) bool {
		return e.Msg == "job state" && e.Attrs["job"] == r2.ID && e.Attrs["state"] == "running"
	})
	if got := w.record(t, r.ID); got.State != subjects.StateFailed || got.Attempt != 2 {
		t.Errorf("a terminal record moved to %s attempt %d", got.State, got.Attempt)
	}
}

// The jobs stream's head is stored once, first, never expires, and comes
// back with the next start after a purge took it; no agent is handed it.
func TestQueueHead(t *testing.T) {
	w := newWorld(t)
	ctx := testenv.Context(t)
	cfg := coordinator.Config{Auth: w.env.Auth, Conn: w.env.CoordConn, Logger: w.env.Logs.Logger()}
	st, err := w.env.CoordConn.JS.Stream(ctx, subjects.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	head := func() *jetstream.RawStreamMsg {
		t.Helper()
		m, err := st.GetLastMsgForSubject(ctx, subjects.JobsHead)
		if err != nil {
			t.Fatalf("the jobs stream's head: %v", err)
		}
		return m
	}
	first := head()
	if first.Sequence != 1 || first.Header.Get(jetstream.MsgTTLHeader) != "never" {
		t.Errorf("head at sequence %d with TTL %q, want 1 and never", first.Sequence, first.Header.Get(jetstream.MsgTTLHeader))
	}
	if _, err := coordinator.New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if again := head(); again.Sequence != first.Sequence {
		t.Errorf("a second start stored another head at %d", again.Sequence)
	}
	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := coordinator.New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if again := head(); again.Sequence <= first.Sequence {
		t.Errorf("after a purge the head is at %d, want a new one", again.Sequence)
	}
	// An agent of a tag gets jobs and never the head.
	r := submit(t, w.alice, spec("a"))
	var got []string
	if _, err := w.agentA.Pull(ctx, subjects.JobsStream, subjects.AgentsConsumer("a"), 2, time.Second, func(m *nats.Msg) error {
		got = append(got, m.Subject)
		return m.Ack()
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{subjects.JobSubject("a", r.ID)}; !slices.Equal(got, want) {
		t.Errorf("the agent pulled %q, want %q", got, want)
	}
}

// New and Register run on every start, so both must be idempotent.
func TestNewAndRegisterIdempotent(t *testing.T) {
	w := newWorld(t)
	ctx := testenv.Context(t)
	cfg := coordinator.Config{Auth: w.env.Auth, Conn: w.env.CoordConn, Logger: w.env.Logs.Logger()}
	if _, err := coordinator.New(ctx, cfg); err != nil {
		t.Fatalf("second New: %v", err)
	}
	co, err := coordinator.New(ctx, cfg)
	if err != nil {
		t.Fatalf("third New: %v", err)
	}
	// A job queued before the restarts is still there and still readable.
	r := submit(t, w.alice, spec("a"))
	if _, err := coordinator.New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if !w.jobQueued(t, "a", r.ID) {
		t.Error("New lost a queued job")
	}

	// A creds file made offline (accounts.EnsureCreds) is registered once;
	// registering it again changes nothing.
	path, err := w.env.Auth.EnsureCreds(accounts.Request{Name: "night-agent", Role: accounts.RoleAgent, Tags: []string{"night"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := co.Register(ctx, path); err != nil {
			t.Fatalf("Register: %v", err)
		}
	}
	if _, err := w.env.CoordConn.JS.Consumer(ctx, subjects.JobsStream, subjects.AgentsConsumer("night")); err != nil {
		t.Errorf("Register made no consumer for the agent's tag: %v", err)
	}
	kv, err := w.env.CoordConn.JS.KeyValue(ctx, subjects.CredsBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "night-agent")
	if err != nil || e.Revision() == 0 {
		t.Fatalf("night-agent not registered: %v", err)
	}
	hist, err := kv.History(ctx, "night-agent")
	if err != nil || len(hist) != 1 {
		t.Errorf("night-agent written %d times: %v", len(hist), err)
	}
	// Registering a file for a name issued online keeps the issued record.
	before, _ := kv.Get(ctx, "alice")
	other, _ := w.env.Auth.Issue(accounts.Request{Name: "alice", Role: accounts.RoleAdmin})
	p, _ := w.env.Auth.SaveCreds("alice-again", other.Creds)
	if err := co.Register(ctx, p); err != nil {
		t.Fatal(err)
	}
	if after, _ := kv.Get(ctx, "alice"); after.Revision() != before.Revision() {
		t.Error("Register replaced alice's record")
	}
	if _, err := w.alice.List(ctx, subjects.ListRequest{}); err != nil {
		t.Errorf("alice after the re-register: %v", err)
	}
	// Issue refuses a name already taken, whatever the role.
	if _, err := co.Issue(ctx, accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}}); err == nil {
		t.Error("Issue gave out a name twice")
	}
	if _, err := co.Issue(ctx, accounts.Request{Name: "alice.evil", Role: accounts.RoleUser, Tags: []string{"a"}}); err == nil {
		t.Error("Issue accepted a dotted name")
	}
	if err := co.Register(ctx, "/nonexistent.creds"); err == nil {
		t.Error("Register of a missing file succeeded")
	}
}

// Reader slot names repeat across the events and audit streams: releasing
// one reader leaves the other stream's alone.
func TestReleaseTakesOnlyItsStream(t *testing.T) {
	w := newWorld(t)
	r := submit(t, w.admin, spec("a"))
	ask := func(verb, body string) subjects.Reply {
		t.Helper()
		m, err := w.admin.Request(subjects.APISubject("admin", verb), []byte(body), testenv.Timeout)
		if err != nil {
			t.Fatal(err)
		}
		var reply subjects.Reply
		if err := json.Unmarshal(m.Data, &reply); err != nil || reply.Error != nil {
			t.Fatalf("%s %s: %s, %v", verb, body, m.Data, err)
		}
		return reply
	}
	events := ask(subjects.VerbRead, `{"job":"`+r.ID+`"}`).Reader
	audit := ask(subjects.VerbRead, `{"audit":true}`).Reader
	if events == nil || audit == nil || events.Consumer != audit.Consumer {
		t.Fatalf("readers %+v and %+v; want the same slot on both streams", events, audit)
	}
	ask(subjects.VerbRelease, `{"consumer":"`+events.Consumer+`"}`)
	ctx := testenv.Context(t)
	if _, err := w.env.CoordConn.JS.Consumer(ctx, subjects.EventsStream, events.Consumer); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("the events reader after its release: %v", err)
	}
	if _, err := w.env.CoordConn.JS.Consumer(ctx, subjects.AuditStream, audit.Consumer); err != nil {
		t.Errorf("releasing the events reader took the audit reader too: %v", err)
	}
	ask(subjects.VerbRelease, `{"stream":"OUTPOST_AUDIT","consumer":"`+audit.Consumer+`"}`)
	if _, err := w.env.CoordConn.JS.Consumer(ctx, subjects.AuditStream, audit.Consumer); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("the audit reader after its release: %v", err)
	}
}

// An agent that stored a job's end but died before it acked leaves the
// job's request on the queue; the coordinator takes it off, so the job is
// not delivered again once the ack wait is over.
func TestEndedJobTakenOffTheQueue(t *testing.T) {
	w := newWorld(t)
	r := submit(t, w.alice, spec("a"))
	ctx := testenv.Context(t)
	n, err := w.agentA.Pull(ctx, subjects.JobsStream, subjects.AgentsConsumer("a"), 1, testenv.Timeout, func(*nats.Msg) error { return nil })
	if err != nil || n != 1 {
		t.Fatalf("pulled %d jobs: %v", n, err)
	}
	for _, state := range []subjects.State{subjects.StateRunning, subjects.StateSucceeded} {
		b, _ := json.Marshal(subjects.StatusEvent{Job: r.ID, State: state, Attempt: 1, Agent: "agent-a"})
		if _, err := w.agentA.JS.Publish(ctx, subjects.EventSubject("a", "alice", r.ID, subjects.KindStatus), b); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, "the ended job's request to leave the queue", func() bool { return !w.jobQueued(t, "a", r.ID) })
	if rec := w.record(t, r.ID); rec.State != subjects.StateSucceeded {
		t.Errorf("record %s", rec.State)
	}
}
