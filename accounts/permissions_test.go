package accounts_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

// A job ID no record has: events published under it are dropped by the
// coordinator, so the matrix can publish them freely.
const ghost = "01jd7x3k9q8r6t5v4w3y2z1a0b"

type op string

const (
	pub op = "publish"   // core publish; allowed means a subscriber got it
	sub op = "subscribe" // allowed means a message published to deliver arrived
	req op = "request"   // allowed means the server answered (or found no responder)
)

// permCase is one operation tried by one credential, and whether the
// server must allow it.
type permCase struct {
	who     string // alice, bob, agent-a, obs, admin
	op      op
	subject string
	body    string // of a request
	deliver string // a subject the watcher publishes to reach a subscription
	allowed bool
	// ok checks the reply of an allowed request, when it says more than
	// that the request got through.
	ok func(*nats.Msg) error
}

func (c permCase) name() string {
	verdict := "denied"
	if c.allowed {
		verdict = "allowed"
	}
	return fmt.Sprintf("%s %s %s %s", c.who, c.op, c.subject, verdict)
}

func consumerCreate(stream, name, filter string) (subject, body string) {
	body = fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"filter_subject":%q,"ack_policy":"none","deliver_policy":"all","inactive_threshold":60000000000,"mem_storage":true}}`,
		stream, name, filter)
	return "$JS.API.CONSUMER.CREATE." + stream + "." + name + "." + filter, body
}

// jsOK checks that a JetStream API reply holds no error.
func jsOK(m *nats.Msg) error {
	var r struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return fmt.Errorf("reply %q: %w", m.Data, err)
	}
	if r.Error != nil {
		return fmt.Errorf("JetStream refused: %d %s", r.Error.ErrCode, r.Error.Description)
	}
	return nil
}

func permissionCases() []permCase {
	ev := func(tag, owner string, kind subjects.EventKind) string {
		return subjects.EventSubject(tag, owner, ghost, kind)
	}
	create := func(who, name, filter string, allowed bool) permCase {
		s, b := consumerCreate(subjects.EventsStream, name, filter)
		c := permCase{who: who, op: req, subject: s, body: b, allowed: allowed}
		if allowed {
			c.ok = jsOK
		}
		return c
	}
	jsreq := func(who, subject string, allowed bool) permCase {
		return permCase{who: who, op: req, subject: subject, body: "{}", allowed: allowed}
	}
	next := `{"batch":1,"no_wait":true}`
	cs := []permCase{
		// Agents publish events of their own tag only.
		{who: "agent-a", op: req, subject: ev("a", "alice", subjects.KindStatus), body: "{}", allowed: true, ok: jsOK},
		{who: "agent-a", op: req, subject: ev("a", "alice", subjects.KindLog), body: "x\n", allowed: true, ok: jsOK},
		{who: "agent-a", op: req, subject: ev("b", "alice", subjects.KindStatus), body: "{}"},
		{who: "agent-a", op: req, subject: ev("b", "alice", subjects.KindLog), body: "x\n"},
		{who: "agent-a", op: req, subject: "outpost.ev.a.alice." + ghost + ".other", body: "{}"},
		{who: "agent-a", op: req, subject: subjects.JobSubject("a", ghost), body: "{}"},
		{who: "agent-a", op: pub, subject: subjects.HeartbeatSubject("a", "agent-a"), allowed: true},
		{who: "agent-a", op: pub, subject: subjects.HeartbeatSubject("a", "agent-x")},
		{who: "agent-a", op: pub, subject: subjects.HeartbeatSubject("b", "agent-a")},
		// Agents reach their tag's consumer and nothing else of JetStream.
		{who: "agent-a", op: req, subject: "$JS.API.CONSUMER.INFO.OUTPOST_JOBS.agents-a", allowed: true, ok: jsOK},
		{who: "agent-a", op: req, subject: "$JS.API.CONSUMER.INFO.OUTPOST_JOBS.agents-b"},
		{who: "agent-a", op: req, subject: "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-a", body: next, allowed: true},
		{who: "agent-a", op: req, subject: "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-b", body: next},
		{who: "agent-a", op: req, subject: "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.coordinator", body: next},
		{who: "agent-a", op: req, subject: "$JS.API.CONSUMER.INFO.OUTPOST_JOBS.agents-a.x"},
		{who: "agent-a", op: pub, subject: "$JS.ACK.OUTPOST_JOBS.agents-a.1.1.1.1.1.1", allowed: true},
		{who: "agent-a", op: pub, subject: "$JS.ACK.OUTPOST_JOBS.agents-b.1.1.1.1.1.1"},
		{who: "agent-a", op: pub, subject: "$JS.ACK.OUTPOST_EVENTS.coordinator.1.1.1.1.1.1"},
		create("agent-a", "r_agent-a_1", "outpost.ev.a.>", false),
		{who: "agent-a", op: req, subject: subjects.APISubject("agent-a", subjects.VerbList), body: "{}"},
		{who: "agent-a", op: pub, subject: subjects.ControlSubject("a", ghost)},
		{who: "agent-a", op: pub, subject: subjects.Inbox(subjects.CoordinatorName) + ".x"},
		{who: "agent-a", op: sub, subject: subjects.ControlFilter("a"), deliver: subjects.ControlSubject("a", ghost), allowed: true},
		{who: "agent-a", op: sub, subject: subjects.ControlFilter("b")},
		{who: "agent-a", op: sub, subject: "outpost.ctl.>"},
		{who: "agent-a", op: sub, subject: "_INBOX_agent-a.>", deliver: "_INBOX_agent-a.x", allowed: true},
		{who: "agent-a", op: sub, subject: "_INBOX_alice.>"},
		{who: "agent-a", op: sub, subject: "_INBOX_coordinator.>"},
		{who: "agent-a", op: sub, subject: "_INBOX.>"},
		{who: "agent-a", op: sub, subject: "outpost.ev.a.>"},
		{who: "agent-a", op: sub, subject: "outpost.jobs.a.>"},
		{who: "agent-a", op: sub, subject: "outpost.hb.>"},
		{who: "agent-a", op: sub, subject: ">"},

		// Users call the API under their own name only.
		{who: "alice", op: req, subject: subjects.APISubject("alice", subjects.VerbList), body: "{}", allowed: true},
		{who: "alice", op: req, subject: subjects.APISubject("bob", subjects.VerbSubmit), body: "{}"},
		{who: "alice", op: req, subject: subjects.APISubject("admin", subjects.VerbList), body: "{}"},
		{who: "alice", op: req, subject: subjects.APISubject(subjects.CoordinatorName, subjects.VerbList), body: "{}"},
		// Users read their own jobs, through consumers pinned to their name.
		create("alice", "r_alice_1", "outpost.ev.*.alice.>", true),
		create("alice", "r_alice_4", "outpost.ev.a.alice."+ghost+".>", true),
		create("alice", "r_alice_1", "outpost.ev.*.bob.>", false),
		create("alice", "r_alice_1", "outpost.ev.*.*.>", false),
		create("alice", "r_alice_1", "outpost.ev.>", false),
		create("alice", "r_alice_1", ">", false),
		create("alice", "r_bob_1", "outpost.ev.*.alice.>", false),
		create("alice", "r_alice_5", "outpost.ev.*.alice.>", false),
		create("alice", "coordinator", "outpost.ev.*.alice.>", false),
		create("alice", "r_alice_1.x", "outpost.ev.*.alice.>", false), // a dotted name
		jsreq("alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_1", false),
		jsreq("alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS", false),
		jsreq("alice", "$JS.API.CONSUMER.DURABLE.CREATE.OUTPOST_EVENTS.r_alice_1", false),
		jsreq("alice", "$JS.API.CONSUMER.INFO.OUTPOST_EVENTS.r_alice_1", true),
		jsreq("alice", "$JS.API.CONSUMER.DELETE.OUTPOST_EVENTS.r_alice_2", true),
		{who: "alice", op: req, subject: "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.r_alice_3", body: next, allowed: true},
		{who: "alice", op: req, subject: "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.r_bob_1", body: next},
		{who: "alice", op: req, subject: "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.r_alice_1.x", body: next},
		{who: "alice", op: req, subject: "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.coordinator", body: next},
		{who: "alice", op: req, subject: "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-a", body: next},
		jsreq("alice", "$JS.API.CONSUMER.INFO.OUTPOST_EVENTS.r_bob_1", false),
		jsreq("alice", "$JS.API.CONSUMER.INFO.OUTPOST_EVENTS.r_alice_1.x", false),
		jsreq("alice", "$JS.API.CONSUMER.DELETE.OUTPOST_EVENTS.r_bob_1", false),
		jsreq("alice", "$JS.API.STREAM.INFO.OUTPOST_EVENTS", false),
		{who: "alice", op: sub, subject: "outpost.ev.*.alice.>", deliver: ev("a", "alice", subjects.KindLog), allowed: true},
		{who: "alice", op: sub, subject: "outpost.ev.a.bob.>"},
		{who: "alice", op: sub, subject: "outpost.ev.a.>"},
		{who: "alice", op: sub, subject: "outpost.ev.>"},
		{who: "alice", op: sub, subject: "_INBOX_alice.>", deliver: "_INBOX_alice.x", allowed: true},
		{who: "alice", op: sub, subject: "_INBOX_bob.>"},
		{who: "alice", op: sub, subject: "_INBOX.>"},
		{who: "alice", op: sub, subject: "outpost.api.>"},
		{who: "alice", op: sub, subject: subjects.ControlFilter("a")},
		{who: "alice", op: req, subject: ev("a", "alice", subjects.KindStatus), body: "{}"},
		{who: "alice", op: req, subject: subjects.JobSubject("a", ghost), body: "{}"},
		{who: "alice", op: pub, subject: subjects.ControlSubject("a", ghost)},
		{who: "alice", op: pub, subject: subjects.HeartbeatSubject("a", "alice")},

		// Observers read their tags' events and call nothing.
		create("obs", "r_obs_1", "outpost.ev.a.>", true),
		create("obs", "r_obs_1", "outpost.ev.b.>", false),
		create("obs", "r_obs_1", "outpost.ev.*.>", false),
		create("obs", "r_obs_1", "outpost.ev.>", false),
		create("obs", "r_alice_1", "outpost.ev.a.>", false),
		{who: "obs", op: req, subject: subjects.APISubject("obs", subjects.VerbSubmit), body: "{}"},
		{who: "obs", op: req, subject: subjects.APISubject("obs", subjects.VerbList), body: "{}"},
		{who: "obs", op: req, subject: subjects.APISubject("obs", subjects.VerbGet), body: "{}"},
		{who: "obs", op: sub, subject: "outpost.ev.a.>", deliver: ev("a", "bob", subjects.KindStatus), allowed: true},
		{who: "obs", op: sub, subject: "outpost.ev.b.>"},
		{who: "obs", op: sub, subject: "outpost.ev.>"},
		{who: "obs", op: sub, subject: "_INBOX_obs.>", deliver: "_INBOX_obs.x", allowed: true},
		jsreq("obs", "$JS.API.STREAM.INFO.OUTPOST_EVENTS", false),
		{who: "obs", op: req, subject: ev("a", "alice", subjects.KindLog), body: "x\n"},

		// Admins call every verb under their own name, read every event,
		// and inspect the events stream; they touch no stream or consumer
		// but their own readers.
		{who: "admin", op: req, subject: subjects.APISubject("admin", subjects.VerbList), body: "{}", allowed: true},
		{who: "admin", op: req, subject: subjects.APISubject("alice", subjects.VerbList), body: "{}"},
		jsreq("admin", "$JS.API.STREAM.INFO.OUTPOST_EVENTS", true),
		jsreq("admin", "$JS.API.STREAM.INFO.OUTPOST_JOBS", false),
		create("admin", "r_admin_1", "outpost.ev.>", true),
		create("admin", "r_alice_1", "outpost.ev.>", false),
		{who: "admin", op: sub, subject: "outpost.ev.>", deliver: ev("b", "bob", subjects.KindLog), allowed: true},
		{who: "admin", op: sub, subject: "outpost.api.>"},
		{who: "admin", op: sub, subject: "outpost.ctl.>"},
		{who: "admin", op: sub, subject: "outpost.jobs.>"},
		{who: "admin", op: sub, subject: "_INBOX_alice.>"},
		{who: "admin", op: pub, subject: subjects.ControlSubject("a", ghost)},
		{who: "admin", op: req, subject: subjects.JobSubject("a", ghost), body: "{}"},
		{who: "admin", op: req, subject: ev("a", "admin", subjects.KindStatus), body: "{}"},
	}
	// No role but the coordinator may manage streams, other consumers, or
	// the buckets, or read stored messages directly.
	for _, who := range []string{"agent-a", "alice", "obs", "admin"} {
		for _, s := range []string{
			"$JS.API.INFO",
			"$JS.API.STREAM.NAMES",
			"$JS.API.STREAM.CREATE.EVIL",
			"$JS.API.STREAM.UPDATE.OUTPOST_EVENTS",
			"$JS.API.STREAM.DELETE.OUTPOST_EVENTS",
			"$JS.API.STREAM.PURGE.OUTPOST_JOBS",
			"$JS.API.STREAM.MSG.GET.OUTPOST_EVENTS",
			"$JS.API.STREAM.MSG.DELETE.OUTPOST_EVENTS",
			"$JS.API.DIRECT.GET.OUTPOST_EVENTS",
			"$JS.API.CONSUMER.DELETE.OUTPOST_EVENTS.coordinator",
			"$JS.API.CONSUMER.DELETE.OUTPOST_JOBS.agents-a",
			"$JS.API.CONSUMER.DURABLE.CREATE.OUTPOST_JOBS.agents-a",
			"$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.coordinator.outpost.ev.*.*.*.status",
			"$JS.API.CONSUMER.CREATE.OUTPOST_JOBS.agents-a.outpost.jobs.a.>",
			"$JS.API.CONSUMER.LIST.OUTPOST_EVENTS",
			"$JS.API.STREAM.INFO.KV_" + subjects.CredsBucket,
			"$JS.API.DIRECT.GET.KV_" + subjects.CredsBucket + ".$KV." + subjects.CredsBucket + ".admin",
		} {
			cs = append(cs, jsreq(who, s, false))
		}
		cs = append(cs,
			permCase{who: who, op: req, subject: "$KV." + subjects.JobsBucket + "." + ghost, body: "{}"},
			permCase{who: who, op: req, subject: "$KV." + subjects.CredsBucket + "." + who, body: "{}"},
			permCase{who: who, op: sub, subject: "$JS.API.>"},
		)
	}
	return cs
}

// TestPermissions tries each operation of the matrix with the role's real
// credential against a real server and checks the server's verdict. A
// denial arrives asynchronously on the connection's error handler
// (NATS-NOTES point 7); an allowed operation shows its effect.
func TestPermissions(t *testing.T) {
	t.Parallel()
	env := testenv.New(t)
	env.StartCoordinator(coordinator.Limits{})
	creds := map[string]string{
		"agent-a": env.Creds(accounts.RoleAgent, "agent-a", "a"),
		"agent-b": env.Creds(accounts.RoleAgent, "agent-b", "b"),
		"alice":   env.Creds(accounts.RoleUser, "alice", "a"),
		"bob":     env.Creds(accounts.RoleUser, "bob", "a"),
		"obs":     env.Creds(accounts.RoleObserver, "obs", "a"),
		"admin":   env.Creds(accounts.RoleAdmin, "admin"),
	}
	watcher := env.NATS(env.Creds(accounts.RoleCoordinator, subjects.CoordinatorName))
	cases := permissionCases()
	allowed := 0
	for _, c := range cases {
		if c.allowed {
			allowed++
		}
		t.Run(c.name(), func(t *testing.T) {
			errs := make(chan error, 16)
			nc := env.NATS(creds[c.who], nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case errs <- err:
				default:
				}
			}))
			switch c.op {
			case pub:
				checkPub(t, c, nc, watcher, errs)
			case sub:
				checkSub(t, c, nc, watcher, errs)
			case req:
				checkReq(t, c, nc, errs)
			}
		})
		if c.allowed && strings.HasPrefix(c.subject, "$JS.API.CONSUMER.CREATE.") {
			name := strings.Split(c.subject, ".")[5]
			_ = env.CoordConn.JS.DeleteConsumer(testenv.Context(t), subjects.EventsStream, name)
		}
	}
	t.Logf("permission matrix: %d cases, %d allowed, %d denied", len(cases), allowed, len(cases)-allowed)
}

// waitDenied waits for the server to report a permissions violation for
// the operation on the subject.
func waitDenied(t *testing.T, errs <-chan error, what, subject string) {
	t.Helper()
	want := fmt.Sprintf("Permissions Violation for %s to %q", what, subject)
	deadline := time.After(testenv.Timeout)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
				return
			}
			t.Logf("other async error: %v", err)
		case <-deadline:
			t.Fatalf("no %q within %s", want, testenv.Timeout)
		}
	}
}

func noViolation(t *testing.T, nc *nats.Conn, errs <-chan error) {
	t.Helper()
	// A violation is sent before the PONG of the flush, so after a flush
	// nats.go has recorded it.
	if err := nc.FlushTimeout(testenv.Timeout); err != nil {
		t.Fatal(err)
	}
	if err := nc.LastError(); err != nil {
		t.Errorf("allowed operation reported: %v", err)
	}
	select {
	case err := <-errs:
		t.Errorf("allowed operation reported: %v", err)
	default:
	}
}

func checkPub(t *testing.T, c permCase, nc, watcher *nats.Conn, errs <-chan error) {
	got, err := watcher.SubscribeSync(c.subject)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Unsubscribe()
	if err := watcher.FlushTimeout(testenv.Timeout); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(c.subject, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if !c.allowed {
		waitDenied(t, errs, "Publish", c.subject)
		return
	}
	noViolation(t, nc, errs)
	if _, err := got.NextMsg(testenv.Timeout); err != nil {
		t.Fatalf("the publish did not arrive: %v", err)
	}
}

func checkSub(t *testing.T, c permCase, nc, watcher *nats.Conn, errs <-chan error) {
	s, err := nc.SubscribeSync(c.subject)
	if err != nil {
		t.Fatal(err)
	}
	if !c.allowed {
		if err := nc.FlushTimeout(testenv.Timeout); err != nil {
			t.Fatal(err)
		}
		waitDenied(t, errs, "Subscription", c.subject)
		return
	}
	noViolation(t, nc, errs)
	if err := watcher.Publish(c.deliver, []byte("x")); err != nil {
		t.Fatal(err)
	}
	m, err := s.NextMsg(testenv.Timeout)
	if err != nil {
		t.Fatalf("nothing arrived from %s: %v", c.deliver, err)
	}
	if m.Subject != c.deliver {
		t.Errorf("got %s", m.Subject)
	}
}

func checkReq(t *testing.T, c permCase, nc *nats.Conn, errs <-chan error) {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Timeout)
	defer cancel()
	type result struct {
		m   *nats.Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := nc.RequestWithContext(ctx, c.subject, []byte(c.body))
		done <- result{m, err}
	}()
	if !c.allowed {
		waitDenied(t, errs, "Publish", c.subject)
		cancel()
		if r := <-done; r.err == nil {
			t.Errorf("a denied request got a reply: %q", r.m.Data)
		}
		return
	}
	r := <-done
	switch {
	case errors.Is(r.err, nats.ErrNoResponders):
		// The server took the request and found no one to answer it.
	case r.err != nil:
		t.Fatalf("request failed: %v", r.err)
	case c.ok != nil:
		if err := c.ok(r.m); err != nil {
			t.Error(err)
		}
	}
	noViolation(t, nc, errs)
}

// TestReaderFilterMustMatchSubject shows that the subject's filter, which
// the permission checks, is the one the consumer gets: the server refuses a
// body that asks for another (NATS-NOTES point 4), and the subject's name
// wins over the body's.
func TestReaderFilterMustMatchSubject(t *testing.T) {
	env := testenv.New(t)
	env.StartCoordinator(coordinator.Limits{})
	alice := env.NATS(env.Creds(accounts.RoleUser, "alice", "a"))
	own := "outpost.ev.*.alice.>"
	subject, _ := consumerCreate(subjects.EventsStream, "r_alice_1", own)
	for name, body := range map[string]string{
		"another owner's filter": `{"stream_name":"OUTPOST_EVENTS","config":{"name":"r_alice_1","filter_subject":"outpost.ev.*.bob.>","ack_policy":"none"}}`,
		"every event":            `{"stream_name":"OUTPOST_EVENTS","config":{"name":"r_alice_1","filter_subject":">","ack_policy":"none"}}`,
		"no filter":              `{"stream_name":"OUTPOST_EVENTS","config":{"name":"r_alice_1","ack_policy":"none"}}`,
		"several filters":        `{"stream_name":"OUTPOST_EVENTS","config":{"name":"r_alice_1","filter_subjects":["outpost.ev.*.alice.>","outpost.ev.*.bob.>"],"ack_policy":"none"}}`,
		"another durable":        `{"stream_name":"OUTPOST_EVENTS","config":{"durable_name":"coordinator","filter_subject":"outpost.ev.*.alice.>","ack_policy":"none"}}`,
		"another stream":         `{"stream_name":"OUTPOST_JOBS","config":{"name":"r_alice_1","filter_subject":"outpost.ev.*.alice.>","ack_policy":"none"}}`,
	} {
		m, err := alice.Request(subject, []byte(body), testenv.Timeout)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if jsOK(m) == nil {
			t.Errorf("%s: the server created the consumer: %s", name, m.Data)
		}
	}
	// A body naming another consumer gets the subject's name.
	m, err := alice.Request(subject, []byte(`{"stream_name":"OUTPOST_EVENTS","config":{"name":"r_bob_1","filter_subject":"outpost.ev.*.alice.>","ack_policy":"none"}}`), testenv.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	if err := jsOK(m); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t)
	stream, err := env.CoordConn.JS.Stream(ctx, subjects.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(ctx)
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	for _, n := range got {
		if n == "r_bob_1" {
			t.Errorf("alice made a consumer named r_bob_1 (consumers: %v)", got)
		}
	}
	info, err := env.CoordConn.JS.Consumer(ctx, subjects.EventsStream, "r_alice_1")
	if err != nil {
		t.Fatalf("no r_alice_1 (consumers: %v): %v", got, err)
	}
	if f := info.CachedInfo().Config.FilterSubject; f != own {
		t.Errorf("r_alice_1 filters %q", f)
	}
}

// Connecting is the first gate: only JWTs signed by a role key of this
// OUTPOST account, unexpired and unaltered, get in.
func TestForeignCredsRefused(t *testing.T) {
	t.Parallel()
	env := testenv.New(t)
	// Another deployment's perfectly valid credential.
	other, _, err := accounts.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	// Its account is unknown here, so the server first tries to look the
	// account up, holding the connection until nats.go gives up on the
	// handshake ("expected 'PONG', got 'PING'") instead of being told
	// "Authorization Violation". Only the refusal is checked.
	path := filepath.Join(t.TempDir(), "foreign.creds")
	if err := os.WriteFile(path, foreign.Creds, 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := client.Dial(testenv.Context(t), client.DialOptions{URL: env.URL, Creds: path, Logger: env.Logs.Logger()}); err == nil {
		c.Close()
		t.Fatal("another operator's credential got in")
	}

	// A JWT that names this account as issuer but is signed by a key the
	// account does not list.
	alice, err := env.Auth.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(alice.JWT)
	if err != nil {
		t.Fatal(err)
	}
	rogue, _ := nkeys.CreateAccount()
	mustRefuse(t, env, "a JWT signed by a foreign account key", resign(t, uc, rogue, alice.Creds))

}

func TestExpiredCredsRefused(t *testing.T) {
	env := testenv.New(t)
	alice, err := env.Auth.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(alice.JWT)
	if err != nil {
		t.Fatal(err)
	}
	uc.Expires = time.Now().Add(-time.Minute).Unix()
	err = mustRefuse(t, env, "an expired credential", resign(t, uc, roleKey(t, env, accounts.RoleUser), alice.Creds))
	if !strings.Contains(err.Error(), "refused the credential") {
		t.Errorf("client.Dial does not say the credential was refused: %v", err)
	}
	// The same credential, unexpired, gets in: the refusal was the expiry.
	uc.Expires = time.Now().Add(time.Hour).Unix()
	good := resign(t, uc, roleKey(t, env, accounts.RoleUser), alice.Creds)
	path := filepath.Join(t.TempDir(), "good.creds")
	os.WriteFile(path, good, 0o600)
	env.Dial(path)
}

func TestTamperedCredsRefused(t *testing.T) {
	env := testenv.New(t)
	alice, err := env.Auth.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	for what, creds := range map[string][]byte{
		"tag changed":  tamper(t, alice.Creds, `"pool:a"`, `"pool:b"`),
		"name changed": tamper(t, alice.Creds, `"name":"alice"`, `"name":"admin"`),
		"role changed": tamper(t, alice.Creds, `"role:user"`, `"role:admin"`),
	} {
		if _, err := accounts.ParseCreds(creds); err == nil {
			t.Errorf("%s: ParseCreds accepted it", what)
		}
		path := filepath.Join(t.TempDir(), "tampered.creds")
		os.WriteFile(path, creds, 0o600)
		// nats.go sends the JWT as it is; the server checks the signature.
		nc, err := nats.Connect(env.URL, nats.UserCredentials(path), nats.NoReconnect(), nats.Timeout(testenv.Timeout))
		if err == nil {
			nc.Close()
			t.Errorf("%s: the server let it in", what)
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("%s: %v", what, err)
		}
	}
}

// A role key signs only its role: a JWT that carries permissions of its
// own, even signed by the right role key, gets nothing beyond the template.
func TestRoleKeyCannotGrantMore(t *testing.T) {
	env := testenv.New(t)
	env.StartCoordinator(coordinator.Limits{})
	alice, err := env.Auth.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(alice.JWT)
	if err != nil {
		t.Fatal(err)
	}
	uc.Permissions.Pub.Allow.Add(">")
	uc.Permissions.Sub.Allow.Add(">")
	creds := resign(t, uc, roleKey(t, env, accounts.RoleUser), alice.Creds)
	path := filepath.Join(t.TempDir(), "greedy.creds")
	os.WriteFile(path, creds, 0o600)
	errs := make(chan error, 4)
	nc, err := nats.Connect(env.URL, nats.UserCredentials(path), nats.NoReconnect(), nats.Timeout(testenv.Timeout),
		nats.CustomInboxPrefix("_INBOX_alice"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		return // refused outright (NATS-NOTES point 1)
	}
	defer nc.Close()
	subject := subjects.APISubject("bob", subjects.VerbSubmit)
	if err := nc.Publish(subject, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(testenv.Timeout); err != nil {
		t.Fatal(err)
	}
	waitDenied(t, errs, "Publish", subject)
}

// mustRefuse checks that the server refuses creds at connect, both to a
// plain nats.go client and to client.Dial, and returns client.Dial's error.
func mustRefuse(t *testing.T, env *testenv.Env, what string, creds []byte) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "refused.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(env.URL, nats.UserCredentials(path), nats.NoReconnect(), nats.Timeout(testenv.Timeout))
	if err == nil {
		nc.Close()
		t.Fatalf("%s: the server let it in", what)
	}
	if msg := strings.ToLower(err.Error()); !strings.Contains(msg, "authorization") && !strings.Contains(msg, "expired") {
		t.Errorf("%s: refused with %v", what, err)
	}
	c, err := client.Dial(testenv.Context(t), client.DialOptions{URL: env.URL, Creds: path, Logger: env.Logs.Logger()})
	if err == nil {
		c.Close()
		t.Fatalf("%s: client.Dial got in", what)
	}
	return err
}

// resign signs claims with key and returns a creds file with the seed of
// the creds it came from.
func resign(t *testing.T, uc *jwt.UserClaims, key nkeys.KeyPair, from []byte) []byte {
	t.Helper()
	tok, err := uc.Encode(key)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(tok, seedOf(t, from))
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

func roleKey(t *testing.T, env *testenv.Env, r accounts.Role) nkeys.KeyPair {
	t.Helper()
	seed, err := os.ReadFile(filepath.Join(env.Auth.Dir(), "keys", "role-"+string(r)+".nk"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}
