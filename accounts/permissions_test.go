package accounts_test

import (
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
	"github.com/nats-io/nats.go/jetstream"
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

// quiet is how long an operation that was neither refused nor answered
// gets to show an effect before it counts as having gone nowhere. Refusals
// and no-responder answers come back at once, so only an operation that
// lands in an account where nothing listens waits it out.
const quiet = 300 * time.Millisecond

// A pull that returns at once: a stored message, or a 404 status.
const pullNow = `{"batch":1,"no_wait":true}`

type op string

const (
	pub op = "publish"   // core publish; it got through if the watcher in OUTPOST got it
	sub op = "subscribe" // it got through if a message sent to it arrived
	req op = "request"   // it got through if something but a no-responders status answered
)

type verdict int

const (
	// denied: the server refused it (a permissions violation), or it
	// landed in the requester's own account where nothing serves it (no
	// responders, JetStream not enabled, nothing arrives).
	denied verdict = iota
	// allowed: it got through and shows its effect.
	allowed
	// refused: it got through to the coordinator, which answered with an
	// error code.
	refused
)

func (v verdict) String() string { return [...]string{"denied", "allowed", "refused"}[v] }

// permCase is one operation tried with one credential, and what must
// become of it.
type permCase struct {
	who     string // a key of the matrix's credentials
	op      op
	subject string
	body    string // of a request, or of the via request of a subscription
	header  nats.Header
	want    verdict
	code    subjects.Code // the coordinator's answer when want is refused
	// A subscription shows it works by receiving what the watcher, in
	// OUTPOST, publishes on deliver; or, with via, the reply to a request
	// the subscriber itself sends on via with deliver as its reply subject.
	// arrives is the subject it comes on, deliver when empty.
	deliver, arrives, via string
	// ok checks what an allowed request got back.
	ok func(*nats.Msg) error
}

func (c permCase) name() string {
	v := c.want.String()
	if c.want == refused {
		v += " " + string(c.code)
	}
	return fmt.Sprintf("%s %s %s %s", c.who, c.op, c.subject, v)
}

// outcome is what became of one operation.
type outcome struct {
	denial string    // how it was refused or went nowhere; "" when it got through
	msg    *nats.Msg // the reply, or the message the subscription got
}

// try does c's operation on nc and reports what became of it. errs gets
// nc's asynchronous errors.
func try(t *testing.T, c permCase, nc, watcher *nats.Conn, errs <-chan error) outcome {
	t.Helper()
	wait := testenv.Timeout
	if c.want == denied {
		wait = quiet
	}
	switch c.op {
	case pub:
		got := hear(t, watcher, c.subject)
		if err := nc.Publish(c.subject, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if d := violation(t, nc, errs, "Publish", c.subject); d != "" {
			return outcome{denial: d}
		}
		return arrival(t, got, wait)
	case sub:
		s, err := nc.SubscribeSync(c.subject)
		if err != nil {
			t.Fatal(err)
		}
		if d := violation(t, nc, errs, "Subscription", c.subject); d != "" {
			return outcome{denial: d}
		}
		if c.deliver == "" {
			// Taken, and nothing to show it harmless with.
			return outcome{}
		}
		if c.via != "" {
			err = nc.PublishRequest(c.via, c.deliver, []byte(c.body))
		} else {
			err = watcher.Publish(c.deliver, []byte("x"))
		}
		if err != nil {
			t.Fatal(err)
		}
		return arrival(t, s, wait)
	default:
		inbox := nc.NewInbox()
		s, err := nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.PublishMsg(&nats.Msg{Subject: c.subject, Reply: inbox, Header: c.header, Data: []byte(c.body)}); err != nil {
			t.Fatal(err)
		}
		if d := violation(t, nc, errs, "Publish", c.subject); d != "" {
			return outcome{denial: d}
		}
		o := arrival(t, s, wait)
		if o.msg != nil && jsErrCode(o.msg) == jetstream.JSErrCodeJetStreamNotEnabledForAccount {
			o.denial = "JetStream not enabled for the account"
		}
		return o
	}
}

// judge checks that what became of c's operation on nc is what c wants,
// and says what it was.
func judge(t *testing.T, c permCase, nc *nats.Conn, got outcome) string {
	t.Helper()
	switch {
	case c.want == denied && got.denial == "":
		t.Fatalf("it got through: %s", describe(got.msg))
	case c.want == denied:
		return "denied: " + got.denial
	case got.denial != "":
		t.Fatalf("denied: %s", got.denial)
	}
	if err := nc.LastError(); err != nil {
		t.Errorf("an allowed operation reported %v", err)
	}
	switch {
	case c.want == refused:
		r, err := apiReply(got.msg)
		if err != nil || r.Error == nil || r.Error.Code != c.code {
			t.Errorf("the coordinator answered %s (%v), not %s", describe(got.msg), err, c.code)
		}
	case c.op == sub:
		want := c.arrives
		if want == "" {
			want = c.deliver
		}
		if got.msg.Subject != want {
			t.Errorf("got a message on %s, want %s", got.msg.Subject, want)
		}
	case c.ok != nil:
		if err := c.ok(got.msg); err != nil {
			t.Error(err)
		}
	}
	return c.want.String()
}

// hear subscribes the watcher to subject, and makes sure the server has
// the subscription.
func hear(t *testing.T, watcher *nats.Conn, subject string) *nats.Subscription {
	t.Helper()
	s, err := watcher.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Unsubscribe() })
	if err := watcher.FlushTimeout(testenv.Timeout); err != nil {
		t.Fatal(err)
	}
	return s
}

// violation reports a permissions violation for what ("Publish",
// "Subscription") to subject, or "" if the server took the operation. The
// server sends its verdict before the PONG of a flush, and nats.go records
// it before it reads the PONG; the asynchronous error handler, which is how
// a client learns of it (NATS-NOTES point 7), must get it too.
func violation(t *testing.T, nc *nats.Conn, errs <-chan error, what, subject string) string {
	t.Helper()
	if err := nc.FlushTimeout(testenv.Timeout); err != nil {
		t.Fatal(err)
	}
	err := nc.LastError()
	if err == nil {
		return ""
	}
	want := fmt.Sprintf("Permissions Violation for %s to %q", what, subject)
	if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), want) {
		t.Fatalf("the server reported %v, not %s", err, want)
	}
	select {
	case got := <-errs:
		if got.Error() != err.Error() {
			t.Errorf("the error handler got %v, the connection %v", got, err)
		}
	case <-time.After(testenv.Timeout):
		t.Fatalf("the error handler never heard of %v", err)
	}
	return "permissions violation"
}

// arrival waits up to wait for a message on s.
func arrival(t *testing.T, s *nats.Subscription, wait time.Duration) outcome {
	t.Helper()
	m, err := s.NextMsg(wait)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return outcome{denial: "no responders"}
	case errors.Is(err, nats.ErrTimeout):
		return outcome{denial: "nothing arrived within " + wait.String()}
	case err != nil:
		t.Fatal(err)
	}
	return outcome{msg: m}
}

// jsErrCode is the JetStream error code in an API reply, or 0.
func jsErrCode(m *nats.Msg) jetstream.ErrorCode {
	var r struct {
		Error *struct {
			ErrCode jetstream.ErrorCode `json:"err_code"`
		} `json:"error"`
	}
	if json.Unmarshal(m.Data, &r) != nil || r.Error == nil {
		return 0
	}
	return r.Error.ErrCode
}

func describe(m *nats.Msg) string {
	if m == nil {
		return "the server took it"
	}
	if s := m.Header.Get("Status"); s != "" {
		return fmt.Sprintf("status %s %s on %s", s, m.Header.Get("Description"), m.Subject)
	}
	return fmt.Sprintf("%q on %s", m.Data, m.Subject)
}

// jsOK checks that a JetStream reply (a publish ack) holds no error.
func jsOK(m *nats.Msg) error {
	var r struct {
		Stream string `json:"stream"`
		Error  *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return fmt.Errorf("reply %s: %w", describe(m), err)
	}
	if r.Error != nil || r.Stream == "" {
		return fmt.Errorf("JetStream did not store it: %s", m.Data)
	}
	return nil
}

// served checks that a consumer answered a pull: with a stored message,
// or with the status that it has none for now.
func served(m *nats.Msg) error {
	switch m.Header.Get("Status") {
	case "", "404", "408":
		return nil
	}
	return fmt.Errorf("the pull got %s", describe(m))
}

// lastStatus is the direct get of the last message on a subject of the
// events stream.
const lastStatus = "$JS.API.DIRECT.GET." + subjects.EventsStream + "."

// lastOf checks that a direct get answered with the last message on
// subject, or that there is none.
func lastOf(subject string) func(*nats.Msg) error {
	return func(m *nats.Msg) error {
		switch {
		case m.Header.Get("Status") == "404":
			return nil
		case m.Header.Get("Status") == "" && m.Header.Get("Nats-Subject") == subject:
			return nil
		}
		return fmt.Errorf("the direct get got %s (subject %q), not the last message on %s", describe(m), m.Header.Get("Nats-Subject"), subject)
	}
}

// badRequest checks that the server turned a request down as malformed.
func badRequest(m *nats.Msg) error {
	if m.Header.Get("Status") != "408" {
		return fmt.Errorf("got %s, want the server's 408 Bad Request", describe(m))
	}
	return nil
}

// storedUnder checks that a pull got a stored message under prefix.
func storedUnder(prefix string) func(*nats.Msg) error {
	return func(m *nats.Msg) error {
		if m.Header.Get("Status") != "" || !strings.HasPrefix(m.Subject, prefix+".") {
			return fmt.Errorf("the pull got %s, not a message under %s", describe(m), prefix)
		}
		return nil
	}
}

func apiReply(m *nats.Msg) (subjects.Reply, error) {
	var r subjects.Reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return r, fmt.Errorf("API reply %s: %w", describe(m), err)
	}
	return r, nil
}

func apiOK(m *nats.Msg) error {
	r, err := apiReply(m)
	if err == nil {
		err = r.Err()
	}
	return err
}

// readerOf checks that a read request got one of name's consumers on stream.
func readerOf(name, stream string) func(*nats.Msg) error {
	return func(m *nats.Msg) error {
		r, err := apiReply(m)
		if err == nil {
			err = r.Err()
		}
		if err == nil && (r.Reader == nil || r.Reader.Stream != stream || !subjects.ReaderOf(r.Reader.Consumer, name)) {
			err = fmt.Errorf("read gave %+v, not a reader of %s on %s", r.Reader, name, stream)
		}
		return err
	}
}

func permissionCases(bob accounts.Identity) []permCase {
	ev := func(tag, owner string, kind subjects.EventKind) string {
		return subjects.EventSubject(tag, owner, ghost, kind)
	}
	live := func(tag, owner string, kind subjects.EventKind) string {
		return subjects.LivePrefix + strings.TrimPrefix(ev(tag, owner, kind), subjects.EventsPrefix)
	}
	api := func(who, as, verb, body string, want verdict) permCase {
		c := permCase{who: who, op: req, subject: subjects.APISubject(as, verb), body: body, want: want}
		if want == allowed {
			c.ok = apiOK
		}
		return c
	}
	refuse := func(who, verb, body string, code subjects.Code) permCase {
		return permCase{who: who, op: req, subject: subjects.APISubject(who, verb), body: body, want: refused, code: code}
	}
	next := func(who, stream, consumer string, ok func(*nats.Msg) error) permCase {
		c := permCase{who: who, op: req, subject: "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer, body: pullNow, ok: ok}
		if ok != nil {
			c.want = allowed
		}
		return c
	}
	listen := func(who, filter, deliver, arrives string) permCase {
		return permCase{who: who, op: sub, subject: filter, deliver: deliver, arrives: arrives, want: allowed}
	}
	inbox := func(who, via, body string) permCase {
		return permCase{who: who, op: sub, subject: subjects.Inbox(who) + ".>", deliver: subjects.Inbox(who) + ".x", via: via, body: body, want: allowed}
	}
	deny := func(who string, o op, subject string) permCase {
		return permCase{who: who, op: o, subject: subject, body: "{}"}
	}
	jobs, events, audit := subjects.JobsStream, subjects.EventsStream, subjects.AuditStream
	getGhost := `{"id":"` + ghost + `"}`
	readGhost := `{"job":"` + ghost + `"}`

	cs := []permCase{
		// Agents pull and ack their own tag's jobs, and nothing else.
		next("agent-a", jobs, "agents-a", served),
		next("agent-a", jobs, "agents-b", nil),
		next("agent-a", jobs, "agents-a.x", nil),
		next("agent-a", events, subjects.CoordinatorConsumer, nil),
		next("agent-a", events, "r_alice_1", nil),
		{who: "agent-a", op: pub, subject: "$JS.ACK.OUTPOST_JOBS.agents-a.1.1.1.1.1.1", want: allowed},
		deny("agent-a", pub, "$JS.ACK.OUTPOST_JOBS.agents-b.1.1.1.1.1.1"),
		deny("agent-a", pub, "$JS.ACK.OUTPOST_EVENTS.coordinator.1.1.1.1.1.1"),
		// They store events of their own tag only, in the shape the
		// coordinator reads.
		{who: "agent-a", op: req, subject: ev("a", "alice", subjects.KindStatus), body: "{}", want: allowed, ok: jsOK},
		{who: "agent-a", op: req, subject: ev("a", "alice", subjects.KindLog), body: "x\n", want: allowed, ok: jsOK},
		deny("agent-a", req, ev("b", "alice", subjects.KindStatus)),
		deny("agent-a", req, ev("b", "alice", subjects.KindLog)),
		// They read the last status of a job of their own tag (one handed
		// over again may have ended meanwhile), and nothing else: the
		// server takes the subject from the request's, and refuses a body
		// that names another.
		{who: "agent-a", op: req, subject: lastStatus + ev("a", "alice", subjects.KindStatus), body: "", want: allowed, ok: lastOf(ev("a", "alice", subjects.KindStatus))},
		{who: "agent-a", op: req, subject: lastStatus + ev("a", "alice", subjects.KindStatus), body: `{"last_by_subj":"` + ev("b", "alice", subjects.KindLog) + `"}`, want: allowed, ok: badRequest},
		{who: "agent-a", op: req, subject: lastStatus + ev("a", "alice", subjects.KindStatus), body: `{"seq":1}`, want: allowed, ok: badRequest},
		deny("agent-a", req, lastStatus+ev("b", "alice", subjects.KindStatus)),
		deny("agent-a", req, lastStatus+ev("a", "alice", subjects.KindLog)),
		deny("agent-a", req, strings.TrimSuffix(lastStatus, ".")),
		deny("agent-a", req, "$JS.API.DIRECT.GET.OUTPOST_JOBS."+subjects.JobSubject("a", ghost)),
		deny("alice", req, lastStatus+ev("a", "alice", subjects.KindStatus)),
		deny("obs", req, lastStatus+ev("a", "alice", subjects.KindStatus)),
		deny("agent-a", req, "outpost.ev.a.alice."+ghost+".other"),
		deny("agent-a", req, "outpost.ev.a.alice"),
		deny("agent-a", req, subjects.JobSubject("a", ghost)),
		deny("agent-a", req, subjects.AuditSubject("agent-a", subjects.VerbSubmit)),
		// They announce themselves under their own name and tag only.
		{who: "agent-a", op: pub, subject: subjects.HeartbeatSubject("a", "agent-a"), want: allowed},
		deny("agent-a", pub, subjects.HeartbeatSubject("a", "agent-x")),
		deny("agent-a", pub, subjects.HeartbeatSubject("b", "agent-a")),
		// They hear their own tag's control messages and their inbox.
		listen("agent-a", subjects.ControlFilter("a"), subjects.ControlSubject("a", ghost), ""),
		inbox("agent-a", "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-a", pullNow),
		deny("agent-a", sub, subjects.ControlFilter("b")),
		deny("agent-a", sub, "outpost.ctl.>"),
		deny("agent-a", sub, "_INBOX_alice.>"),
		deny("agent-a", sub, "_INBOX_coordinator.>"),
		deny("agent-a", sub, "_INBOX.>"),
		deny("agent-a", sub, "outpost.ev.a.>"),
		deny("agent-a", sub, "outpost.live.a.>"),
		deny("agent-a", sub, "outpost.jobs.a.>"),
		deny("agent-a", sub, "outpost.hb.>"),
		deny("agent-a", sub, "outpost.api.>"),
		// They have no API and send nothing else.
		api("agent-a", "agent-a", subjects.VerbList, "{}", denied),
		api("agent-a", "agent-a", subjects.VerbRead, readGhost, denied),
		deny("agent-a", pub, subjects.ControlSubject("a", ghost)),
		deny("agent-a", pub, subjects.Inbox(subjects.CoordinatorName)+".x"),

		// Users call the API under their own name only, and the server
		// stamps who they are over whatever they claim.
		api("alice", "alice", subjects.VerbList, "{}", allowed),
		{who: "alice", op: req, subject: subjects.APISubject("alice", subjects.VerbList), body: "{}", want: allowed, ok: apiOK,
			header: nats.Header{"Nats-Request-Info": {fmt.Sprintf(`{"acc":%q,"user":%q}`, bob.Account, bob.PublicKey)}}},
		api("alice", "bob", subjects.VerbList, "{}", denied),
		api("alice", "bob", subjects.VerbSubmit, "{}", denied),
		api("alice", "admin", subjects.VerbIssue, "{}", denied),
		api("alice", subjects.CoordinatorName, subjects.VerbList, "{}", denied),
		refuse("alice", subjects.VerbGet, getGhost, subjects.CodeNotFound),
		refuse("alice", subjects.VerbIssue, `{"name":"mallory","role":"admin"}`, subjects.CodeForbidden),
		refuse("alice", subjects.VerbRevoke, `{"name":"bob"}`, subjects.CodeForbidden),
		refuse("alice", subjects.VerbCreds, "{}", subjects.CodeForbidden),
		refuse("alice", subjects.VerbRead, `{"audit":true}`, subjects.CodeForbidden),
		// Her four reader slots are taken (see TestPermissions).
		refuse("alice", subjects.VerbRead, readGhost, subjects.CodeConflict),
		{who: "bob", op: req, subject: subjects.APISubject("bob", subjects.VerbRead), body: readGhost, want: allowed, ok: readerOf("bob", events)},
		refuse("bob", subjects.VerbRelease, `{"consumer":"r_alice_1"}`, subjects.CodeBadRequest),
		refuse("bob", subjects.VerbRelease, `{"consumer":"coordinator"}`, subjects.CodeBadRequest),
		// Users pull their own readers on the events stream, and only those.
		next("alice", events, "r_alice_1", served),
		next("alice", events, "r_alice_4", served),
		next("alice", events, "r_alice_5", nil),
		next("alice", events, "r_bob_1", nil),
		next("alice", events, "r_alice_1.x", nil),
		next("alice", events, subjects.CoordinatorConsumer, nil),
		next("alice", audit, "r_alice_1", nil), // it exists: TestPermissions made it
		next("alice", jobs, "agents-a", nil),
		deny("alice", pub, "$JS.ACK.OUTPOST_EVENTS.r_alice_1.1.1.1.1.1.1"),
		// Users hear the live copies of their own jobs' events and their inbox.
		listen("alice", subjects.LiveFilter("a", "alice"), ev("a", "alice", subjects.KindLog), live("a", "alice", subjects.KindLog)),
		inbox("alice", subjects.APISubject("alice", subjects.VerbList), "{}"),
		deny("alice", sub, subjects.LiveFilter("a", "bob")),
		deny("alice", sub, subjects.LiveFilter("a", "*")),
		deny("alice", sub, subjects.LiveFilter("b", "alice")),
		deny("alice", sub, "outpost.live.>"),
		deny("alice", sub, "outpost.ev.*.alice.>"),
		deny("alice", sub, "outpost.ev.>"),
		deny("alice", sub, "_INBOX_bob.>"),
		deny("alice", sub, "_INBOX.>"),
		deny("alice", sub, "outpost.api.>"),
		deny("alice", sub, subjects.ControlFilter("a")),
		deny("alice", sub, "outpost.audit.>"),
		// Users store nothing and signal no agent.
		deny("alice", req, ev("a", "alice", subjects.KindStatus)),
		deny("alice", req, subjects.JobSubject("a", ghost)),
		deny("alice", pub, subjects.ControlSubject("a", ghost)),
		deny("alice", pub, subjects.HeartbeatSubject("a", "alice")),

		// Observers read under their own name; the coordinator refuses
		// them anything else.
		refuse("obs", subjects.VerbList, "{}", subjects.CodeForbidden),
		{who: "obs", op: req, subject: subjects.APISubject("obs", subjects.VerbRead), body: `{"audit":true}`, want: allowed, ok: readerOf("obs", audit)},
		{who: "obs", op: req, subject: subjects.APISubject("obs", subjects.VerbRead), body: readGhost, want: allowed, ok: readerOf("obs", events)},
		refuse("obs", subjects.VerbGet, getGhost, subjects.CodeForbidden),
		refuse("obs", subjects.VerbSubmit, `{"tag":"a","command":["true"]}`, subjects.CodeForbidden),
		refuse("obs", subjects.VerbStop, getGhost, subjects.CodeForbidden),
		refuse("obs", subjects.VerbIssue, `{"name":"mallory","role":"admin"}`, subjects.CodeForbidden),
		refuse("obs", subjects.VerbRevoke, `{"name":"alice"}`, subjects.CodeForbidden),
		refuse("obs", subjects.VerbCreds, "{}", subjects.CodeForbidden),
		api("obs", "alice", subjects.VerbList, "{}", denied),
		api("obs", "admin", subjects.VerbIssue, "{}", denied),
		// Observers pull their own readers on events and audit.
		next("obs", events, "r_obs_1", served),
		next("obs", audit, "r_obs_1", storedUnder(subjects.AuditPrefix)),
		next("obs", events, "r_alice_1", nil),
		next("obs", audit, "r_alice_1", nil),
		next("obs", events, subjects.CoordinatorConsumer, nil),
		next("obs", jobs, "agents-a", nil),
		// Observers hear every live event of their tags.
		listen("obs", subjects.LiveFilter("a", "*"), ev("a", "bob", subjects.KindLog), live("a", "bob", subjects.KindLog)),
		inbox("obs", subjects.APISubject("obs", subjects.VerbList), "{}"),
		deny("obs", sub, subjects.LiveFilter("b", "*")),
		deny("obs", sub, "outpost.live.>"),
		deny("obs", sub, "outpost.ev.a.>"),
		deny("obs", sub, "outpost.audit.>"),
		deny("obs", sub, "_INBOX_alice.>"),
		deny("obs", req, ev("a", "alice", subjects.KindLog)),
		deny("obs", pub, subjects.ControlSubject("a", ghost)),

		// Admins call every verb under their own name, and read and hear
		// everything through their own readers and the live copies.
		api("admin", "admin", subjects.VerbList, "{}", allowed),
		api("admin", "admin", subjects.VerbCreds, "{}", allowed),
		{who: "admin", op: req, subject: subjects.APISubject("admin", subjects.VerbRead), body: `{"audit":true}`, want: allowed, ok: readerOf("admin", audit)},
		api("admin", "alice", subjects.VerbList, "{}", denied),
		api("admin", subjects.CoordinatorName, subjects.VerbList, "{}", denied),
		next("admin", events, "r_admin_1", served),
		next("admin", audit, "r_admin_1", storedUnder(subjects.AuditPrefix)),
		next("admin", events, "r_alice_1", nil),
		next("admin", events, subjects.CoordinatorConsumer, nil),
		next("admin", jobs, "agents-a", nil),
		listen("admin", "outpost.live.>", ev("b", "bob", subjects.KindLog), live("b", "bob", subjects.KindLog)),
		inbox("admin", subjects.APISubject("admin", subjects.VerbList), "{}"),
		deny("admin", sub, "outpost.ev.>"),
		deny("admin", sub, "outpost.api.>"),
		deny("admin", sub, "outpost.ctl.>"),
		deny("admin", sub, "outpost.jobs.>"),
		deny("admin", sub, "outpost.hb.>"),
		deny("admin", sub, "outpost.audit.>"),
		deny("admin", sub, "_INBOX_alice.>"),
		deny("admin", pub, subjects.ControlSubject("a", ghost)),
		deny("admin", req, subjects.JobSubject("a", ghost)),
		deny("admin", req, ev("a", "admin", subjects.KindStatus)),
		deny("admin", pub, subjects.HeartbeatSubject("a", "admin")),
	}
	// No credential but the coordinator's touches JetStream's API, the
	// buckets, or the system account: their accounts have no JetStream and
	// import none of it.
	for _, who := range []string{"agent-a", "alice", "obs", "admin"} {
		for _, s := range []string{
			"$JS.API.INFO",
			"$JS.API.STREAM.NAMES",
			"$JS.API.STREAM.LIST",
			"$JS.API.STREAM.CREATE.EVIL",
			"$JS.API.STREAM.INFO.OUTPOST_EVENTS",
			"$JS.API.STREAM.UPDATE.OUTPOST_EVENTS",
			"$JS.API.STREAM.DELETE.OUTPOST_EVENTS",
			"$JS.API.STREAM.PURGE.OUTPOST_JOBS",
			"$JS.API.STREAM.MSG.GET.OUTPOST_EVENTS",
			"$JS.API.STREAM.MSG.DELETE.OUTPOST_EVENTS",
			"$JS.API.DIRECT.GET.OUTPOST_EVENTS",
			"$JS.API.DIRECT.GET.KV_" + subjects.CredsBucket + ".$KV." + subjects.CredsBucket + ".admin",
			"$JS.API.STREAM.INFO.KV_" + subjects.CredsBucket,
			"$JS.API.CONSUMER.LIST.OUTPOST_EVENTS",
			"$JS.API.CONSUMER.INFO.OUTPOST_JOBS.agents-a",
			"$JS.API.CONSUMER.INFO.OUTPOST_EVENTS.r_" + who + "_1",
			"$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_" + who + "_1.outpost.ev.>",
			"$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.coordinator.outpost.ev.*.*.*.status",
			"$JS.API.CONSUMER.CREATE.OUTPOST_JOBS.agents-a.outpost.jobs.a.>",
			"$JS.API.CONSUMER.DURABLE.CREATE.OUTPOST_JOBS.agents-a",
			"$JS.API.CONSUMER.DELETE.OUTPOST_EVENTS.r_" + who + "_1",
			"$JS.API.CONSUMER.DELETE.OUTPOST_EVENTS.coordinator",
			"$JS.API.CONSUMER.DELETE.OUTPOST_JOBS.agents-a",
			"$JS.API.CONSUMER.MSG.NEXT.KV_" + subjects.CredsBucket + ".x",
			"$KV." + subjects.JobsBucket + "." + ghost,
			"$KV." + subjects.CredsBucket + "." + who,
			"$SYS.REQ.CLAIMS.UPDATE",
			"$SYS.REQ.ACCOUNT." + who + ".CLAIMS.LOOKUP",
			"$SYS.REQ.SERVER.PING.CONNZ",
		} {
			cs = append(cs, deny(who, req, s))
		}
		cs = append(cs,
			deny(who, sub, "$JS.API.>"),
			deny(who, sub, "$JS.ACK.>"),
			deny(who, sub, "$KV.>"),
			deny(who, sub, "$SYS.>"),
			deny(who, sub, ">"),
		)
	}
	return cs
}

// TestPermissions tries each operation of the matrix with the role's real
// credential against a real server and a running coordinator, and checks
// what became of it: a denied operation is refused by the server or lands
// where nothing serves it, an allowed one shows its effect. The streams,
// consumers and buckets it aims at exist, so that a denial is the
// server's doing and not an absence.
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
	bob, _, err := accounts.ReadCreds(creds["bob"])
	if err != nil {
		t.Fatal(err)
	}

	// The readers the matrix pulls, or must not: all four of alice's
	// slots, one of bob's, an events and an audit reader of the observer
	// and the admin, and a consumer on the audit stream named for alice,
	// which she must not reach although its name is one of hers.
	job, trail := `{"job":"`+ghost+`"}`, `{"audit":true}`
	for who, reads := range map[string][]string{
		"alice": {job, job, job, job},
		"bob":   {job},
		"obs":   {job, trail},
		"admin": {job, trail},
	} {
		nc := env.NATS(creds[who])
		for _, r := range reads {
			m, err := nc.Request(subjects.APISubject(who, subjects.VerbRead), []byte(r), testenv.Timeout)
			if err != nil {
				t.Fatalf("%s reads %s: %v", who, r, err)
			}
			if err := apiOK(m); err != nil {
				t.Fatalf("%s reads %s: %v", who, r, err)
			}
		}
		nc.Close()
	}
	ctx := testenv.Context(t)
	if _, err := env.CoordConn.JS.CreateConsumer(ctx, subjects.AuditStream, jetstream.ConsumerConfig{
		Name: "r_alice_1", AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	// An event to be the first message of its stream, which no purge or
	// delete may take away.
	if _, err := env.CoordConn.JS.Publish(ctx, subjects.EventSubject("a", "alice", ghost, subjects.KindLog), []byte("first\n")); err != nil {
		t.Fatal(err)
	}
	before := fixtures(t, env)

	cases := permissionCases(bob)
	counts := map[string]int{}
	start := time.Now()
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			errs := make(chan error, 16)
			nc := env.NATS(creds[c.who], nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case errs <- err:
				default:
				}
			}))
			defer nc.Close()
			counts[judge(t, c, nc, try(t, c, nc, watcher, errs))]++
		})
	}
	t.Logf("permission matrix: %d cases in %s: %v", len(cases), time.Since(start).Round(time.Millisecond), counts)

	untouched(t, env, before)
}

// fixtures fingerprints what no credential may change: every stream and
// consumer as created and configured, the first message of the events and
// audit streams, each credential record but its last-seen time, and the
// absence of a record for the ghost job.
func fixtures(t *testing.T, env *testenv.Env) map[string]string {
	t.Helper()
	ctx := testenv.Context(t)
	js := env.CoordConn.JS
	out := map[string]string{}
	streams := js.ListStreams(ctx)
	for si := range streams.Info() {
		out["stream "+si.Config.Name] = fmt.Sprintf("created %s subjects %v", si.Created, si.Config.Subjects)
		// A bucket's history moves on with every write; a stream's first
		// message goes only with a purge or a delete.
		if !strings.HasPrefix(si.Config.Name, "KV_") && si.State.Msgs > 0 {
			out["first message of "+si.Config.Name] = fmt.Sprint(si.State.FirstSeq)
		}
		s, err := js.Stream(ctx, si.Config.Name)
		if err != nil {
			t.Fatal(err)
		}
		consumers := s.ListConsumers(ctx)
		for ci := range consumers.Info() {
			out["consumer "+si.Config.Name+"."+ci.Name] = fmt.Sprintf("created %s filters %q %q", ci.Created, ci.Config.FilterSubject, ci.Config.FilterSubjects)
		}
		if err := consumers.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := streams.Err(); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, subjects.CredsBucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		var c subjects.Credential
		if err := json.Unmarshal(e.Value(), &c); err != nil {
			t.Fatal(err)
		}
		c.LastSeen = nil
		b, _ := json.Marshal(c)
		out["credential "+k] = string(b)
	}
	jobs, err := js.KeyValue(ctx, subjects.JobsBucket)
	if err != nil {
		t.Fatal(err)
	}
	_, err = jobs.Get(ctx, ghost)
	out["job "+ghost] = fmt.Sprint(err)
	return out
}

// untouched checks that the fixtures are as they were before.
func untouched(t *testing.T, env *testenv.Env, before map[string]string) {
	t.Helper()
	after := fixtures(t, env)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed:\n was %s\n now %s", k, v, after[k])
		}
	}
}

// TestAccountImportsBoundItsUsers shows that an account's imports, not its
// users' permissions, are the outer wall. A credential's account key is
// thrown away at issue, so here the operator key, read from the data
// directory, signs an account with an agent's imports and a user in it
// permitted everything. That user reaches its tag's consumer and events,
// as the agent does, and nothing else: a request anywhere else lands in
// its own account, where nothing answers it. The operator key is the one
// key that can widen that wall, which is why it stays in the data
// directory with mode 0600 and nowhere else.
func TestAccountImportsBoundItsUsers(t *testing.T) {
	t.Parallel()
	env := testenv.New(t)
	env.StartCoordinator(coordinator.Limits{})
	ctx := testenv.Context(t)
	agent, err := env.Coordinator.Issue(ctx, accounts.Request{Name: "agent-a", Role: accounts.RoleAgent, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	env.Creds(accounts.RoleAgent, "agent-b", "b")
	env.Creds(accounts.RoleAdmin, "admin")
	imports, err := jwt.DecodeAccountClaims(agent.AccountJWT)
	if err != nil {
		t.Fatal(err)
	}

	acct, _ := nkeys.CreateAccount()
	ac := jwt.NewAccountClaims(pubKey(t, acct))
	ac.Name = "greedy"
	ac.Imports = imports.Imports
	if err := pushAccount(t, env, signWith(t, ac, loadKey(t, env.Auth, "operator"))); err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	uc := jwt.NewUserClaims(pubKey(t, user))
	uc.Name = "greedy"
	uc.Pub.Allow.Add(">")
	uc.Sub.Allow.Add(">")
	tok, err := uc.Encode(acct)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "greedy.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	nc := env.NATS(path, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	watcher := env.NATS(env.Creds(accounts.RoleCoordinator, subjects.CoordinatorName))
	before := fixtures(t, env)

	ev := func(tag string) string { return subjects.EventSubject(tag, "alice", ghost, subjects.KindLog) }
	for _, c := range []permCase{
		{op: req, subject: "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-a", body: pullNow, want: allowed, ok: served},
		{op: req, subject: ev("a"), body: "x\n", want: allowed, ok: jsOK},
		{op: pub, subject: subjects.HeartbeatSubject("a", "agent-a"), want: allowed},
		{op: req, subject: "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-b", body: pullNow},
		{op: req, subject: "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.coordinator", body: pullNow},
		{op: req, subject: ev("b"), body: "x\n"},
		{op: req, subject: lastStatus + subjects.EventSubject("a", "alice", ghost, subjects.KindStatus), want: allowed, ok: lastOf(subjects.EventSubject("a", "alice", ghost, subjects.KindStatus))},
		{op: req, subject: lastStatus + subjects.EventSubject("b", "alice", ghost, subjects.KindStatus)},
		{op: req, subject: lastStatus + ev("a")},
		{op: pub, subject: subjects.HeartbeatSubject("b", "agent-b")},
		{op: req, subject: subjects.APISubject("greedy", subjects.VerbList), body: "{}"},
		{op: req, subject: subjects.APISubject("admin", subjects.VerbIssue), body: `{"name":"mallory","role":"admin"}`},
		{op: req, subject: "$JS.API.INFO", body: "{}"},
		{op: req, subject: "$JS.API.STREAM.DELETE.OUTPOST_EVENTS"},
		{op: req, subject: "$JS.API.STREAM.PURGE.OUTPOST_JOBS", body: "{}"},
		{op: req, subject: "$JS.API.CONSUMER.DELETE.OUTPOST_JOBS.agents-a"},
		{op: req, subject: "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.mine.outpost.ev.>", body: `{"stream_name":"OUTPOST_EVENTS","config":{"name":"mine","filter_subject":"outpost.ev.>"}}`},
		{op: req, subject: "$JS.API.DIRECT.GET.KV_" + subjects.CredsBucket + ".$KV." + subjects.CredsBucket + ".admin"},
		{op: req, subject: "$KV." + subjects.CredsBucket + ".admin", body: "{}"},
		{op: req, subject: "$KV." + subjects.JobsBucket + "." + ghost, body: "{}"},
		{op: req, subject: "$SYS.REQ.CLAIMS.UPDATE", body: string(tok)},
	} {
		c.who = "greedy"
		t.Run(c.name(), func(t *testing.T) {
			t.Log(judge(t, c, nc, try(t, c, nc, watcher, errs)))
		})
	}
	// It hears its own tag's control messages and nothing else, whatever it
	// subscribes to. Messages of one publisher reach a subscriber in order,
	// so what was sent before the last one would have come first.
	all, err := nc.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	last := subjects.ControlSubject("a", ghost)
	for _, s := range []string{subjects.ControlSubject("b", ghost), subjects.APISubject("greedy", subjects.VerbList),
		subjects.JobSubject("a", ghost), subjects.HeartbeatSubject("a", "agent-a"), last} {
		if err := watcher.Publish(s, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if m, err := all.NextMsg(testenv.Timeout); err != nil || m.Subject != last {
		t.Errorf("the first message it heard is %v (%v), want %s", m, err, last)
	}
	untouched(t, env, before)
}

// pushAccount sends an account JWT to the server as the coordinator does,
// through the system account, and returns the server's answer.
func pushAccount(t *testing.T, env *testenv.Env, tok string) error {
	t.Helper()
	sys, err := coordinator.DialSys(env.Auth, env.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	m, err := sys.Request("$SYS.REQ.CLAIMS.UPDATE", []byte(tok), testenv.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatal(err)
	}
	if r.Error != nil {
		return errors.New(r.Error.Description)
	}
	return nil
}

func signWith(t *testing.T, ac *jwt.AccountClaims, key nkeys.KeyPair) string {
	t.Helper()
	tok, err := ac.Encode(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func pubKey(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// loadKey reads a seed of the authority's data directory.
func loadKey(t *testing.T, a *accounts.Authority, name string) nkeys.KeyPair {
	t.Helper()
	seed, err := os.ReadFile(filepath.Join(a.Dir(), "keys", name+".nk"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// TestRedirectedRepliesStayHome aims the replies that the server itself
// sends, with OUTPOST's authority, at OUTPOST's own JetStream API and
// buckets (NATS-NOTES point 5): a reader's pull, an agent's pull, an
// agent's event publish and an API call, each with a reply subject that
// would delete a stream or a consumer, purge the queue, or overwrite a job
// record if it were heard in OUTPOST. Every reply comes back through the
// requester's import, into its own account, where none of that exists.
func TestRedirectedRepliesStayHome(t *testing.T) {
	t.Parallel()
	env := testenv.New(t)
	env.StartCoordinator(coordinator.Limits{})
	ctx := testenv.Context(t)
	agent := env.NATS(env.Creds(accounts.RoleAgent, "agent-a", "a"))
	alice := env.NATS(env.Creds(accounts.RoleUser, "alice", "a"))
	watcher := env.NATS(env.Creds(accounts.RoleCoordinator, subjects.CoordinatorName))
	call := func(verb string, req any) subjects.Reply {
		t.Helper()
		b, _ := json.Marshal(req)
		m, err := alice.Request(subjects.APISubject("alice", verb), b, testenv.Timeout)
		if err != nil {
			t.Fatalf("%s: %v", verb, err)
		}
		r, err := apiReply(m)
		if err == nil {
			err = r.Err()
		}
		if err != nil {
			t.Fatalf("%s: %v", verb, err)
		}
		return r
	}
	// A job of alice's waits in the queue, no agent running.
	job := call(subjects.VerbSubmit, subjects.JobSpec{Tag: "a", Command: []string{"true"}}).Job
	jobs, err := env.CoordConn.JS.KeyValue(ctx, subjects.JobsBucket)
	if err != nil {
		t.Fatal(err)
	}
	record, err := jobs.Get(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	before := fixtures(t, env)

	targets := map[string]string{
		"stream delete":    "$JS.API.STREAM.DELETE.OUTPOST_EVENTS",
		"job record":       "$KV." + subjects.JobsBucket + "." + job.ID,
		"coordinator":      "$JS.API.CONSUMER.DELETE.OUTPOST_EVENTS.coordinator",
		"queue purge":      "$JS.API.STREAM.PURGE.OUTPOST_JOBS",
		"agents' consumer": "$JS.API.CONSUMER.DELETE.OUTPOST_JOBS.agents-a",
	}
	// Whatever lands on a target in OUTPOST, the watcher hears too.
	landed := map[string]*nats.Subscription{}
	for what, s := range targets {
		landed[what] = hear(t, watcher, s)
	}
	// pull asks a consumer for one message, replying to reply.
	pull := func(nc *nats.Conn, stream, consumer, reply string) {
		t.Helper()
		if err := nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+stream+"."+consumer, reply, []byte(pullNow)); err != nil {
			t.Fatal(err)
		}
	}
	// then makes the same request again with nc's own inbox: a consumer
	// answers in order, so once this reply is in, the one before was sent.
	then := func(nc *nats.Conn, subject, body string) *nats.Msg {
		t.Helper()
		m, err := nc.Request(subject, []byte(body), testenv.Timeout)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	// A reader's pull, one reader per target, each holding the job's
	// queued event. The consumer serves a pull only if something in the
	// requester's account hears its reply subject: there, JetStream's
	// not-enabled answer hears its API, and nothing hears $KV. So the
	// event goes to the API targets, into alice's own account, and stays
	// put for the bucket.
	for _, what := range []string{"stream delete", "job record", "coordinator"} {
		r := call(subjects.VerbRead, subjects.ReadRequest{Job: job.ID}).Reader
		if r.Pending == 0 {
			t.Fatalf("reader %s holds nothing", r.Consumer)
		}
		pull(alice, r.Stream, r.Consumer, targets[what])
		m := then(alice, "$JS.API.CONSUMER.MSG.NEXT."+r.Stream+"."+r.Consumer, pullNow)
		if err := served(m); err != nil {
			t.Fatal(err)
		}
		// The redirected pull took the event if something in alice's
		// account hears the target; then the second finds none left.
		if taken, want := m.Header.Get("Status") != "", strings.HasPrefix(targets[what], "$JS.API."); taken != want {
			t.Errorf("%s: the redirected pull took the event: %v, want %v (the second pull got %s)", what, taken, want, describe(m))
		}
	}
	// An API call whose reply, the job's record, would overwrite it.
	if err := alice.PublishRequest(subjects.APISubject("alice", subjects.VerbGet), targets["job record"], []byte(`{"id":"`+job.ID+`"}`)); err != nil {
		t.Fatal(err)
	}
	call(subjects.VerbGet, subjects.GetRequest{ID: job.ID})
	// An agent's pull: the job itself goes to the target.
	pull(agent, subjects.JobsStream, "agents-a", targets["agents' consumer"])
	if m := then(agent, "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-a", pullNow); m.Header.Get("Status") != "404" {
		t.Errorf("the agent's second pull got %s, want no messages: the first took the only job", describe(m))
	}
	// An agent's event: the stream's ack goes to the target.
	ev := subjects.EventSubject("a", "alice", job.ID, subjects.KindLog)
	if err := agent.PublishRequest(ev, targets["queue purge"], []byte("line\n")); err != nil {
		t.Fatal(err)
	}
	if err := jsOK(then(agent, ev, "line\n")); err != nil {
		t.Fatal(err)
	}

	if err := watcher.FlushTimeout(testenv.Timeout); err != nil {
		t.Fatal(err)
	}
	for what, s := range landed {
		if n, _, _ := s.Pending(); n > 0 {
			m, _ := s.NextMsg(0)
			t.Errorf("%s: %s landed in OUTPOST", what, describe(m))
		}
	}
	untouched(t, env, before)
	if now, err := jobs.Get(ctx, job.ID); err != nil || now.Revision() != record.Revision() {
		t.Errorf("the job record is now %v (%v), was revision %d", now, err, record.Revision())
	}
	// The job the redirected pull took is still the agents', waiting for
	// its ack, and still in the queue.
	info, err := env.CoordConn.JS.Consumer(ctx, subjects.JobsStream, "agents-a")
	if err != nil {
		t.Fatal(err)
	}
	if ci := info.CachedInfo(); ci.NumAckPending != 1 || ci.Delivered.Consumer != 1 {
		t.Errorf("agents-a has %d pending acks after %d deliveries, want the one job", ci.NumAckPending, ci.Delivered.Consumer)
	}
	queue, err := env.CoordConn.JS.Stream(ctx, subjects.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.GetLastMsgForSubject(ctx, subjects.JobSubject("a", job.ID)); err != nil {
		t.Errorf("the job is gone from the queue: %v", err)
	}
}

// Connecting is the first gate: only a user JWT signed by the key of an
// account that our operator signed, unexpired and unaltered, gets in.
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
	// The server's resolver stores any account JWT the system account
	// pushes, but uses only those our operator signed.
	if err := pushAccount(t, env, foreign.AccountJWT); err != nil {
		t.Logf("the server refused another operator's account: %v", err)
	}
	refusedAuth(t, env, "a credential of another operator's account", foreign.Creds)

	// A user JWT that names alice's account as its issuer but is signed by
	// another key, as if it were a signing key of that account.
	alice, err := env.Auth.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(alice.JWT)
	if err != nil {
		t.Fatal(err)
	}
	rogue, _ := nkeys.CreateAccount()
	uc.IssuerAccount = alice.Account
	refusedAuth(t, env, "a JWT signed by a key alice's account does not list", resign(t, uc, rogue, alice.Creds))
	// Nor does the OUTPOST account's key sign users into alice's account.
	refusedAuth(t, env, "a JWT for alice's account signed by OUTPOST", resign(t, uc, loadKey(t, env.Auth, accounts.WorkAccount), alice.Creds))
	// Signed by an account key of its own, the JWT is refused because the
	// operator never signed that account. The server first tries to look
	// the account up, holding the connection until nats.go gives up on the
	// handshake ("expected 'PONG', got 'PING'") instead of being told
	// "Authorization Violation", so only the refusal is checked.
	uc.IssuerAccount = ""
	mustRefuse(t, env, "a JWT of an account nobody signed", resign(t, uc, rogue, alice.Creds))
}

// An expired credential is shut out: the server closes its connection when
// it expires, and refuses it from then on.
func TestExpiredCredsRefused(t *testing.T) {
	t.Parallel()
	env := testenv.New(t)
	// Two seconds, so it is good for at least one whole second.
	alice, err := env.Auth.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}, Expires: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "alice.creds")
	if err := os.WriteFile(path, alice.Creds, 0o600); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	errs := make(chan error, 4)
	nc, err := nats.Connect(env.URL, nats.UserCredentials(path), nats.NoReconnect(), nats.Timeout(testenv.Timeout),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("the credential was refused before it expired: %v", err)
	}
	defer nc.Close()
	select {
	case <-closed:
	case <-time.After(testenv.Timeout):
		t.Fatal("the connection outlived its credential")
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrAuthExpired) {
			t.Errorf("closed with %v", err)
		}
	default:
		if !errors.Is(nc.LastError(), nats.ErrAuthExpired) {
			t.Errorf("closed with %v", nc.LastError())
		}
	}
	// The server closes the connection at the expiry. It counts whole
	// seconds, so for the rest of the expiry's second it still takes the
	// JWT, and closes the connection at once ("Authentication Expired");
	// from the next it refuses the JWT itself.
	testenv.Eventually(t, "the server to refuse the expired JWT", func() bool {
		nc, err := nats.Connect(env.URL, nats.UserCredentials(path), nats.NoReconnect(), nats.Timeout(testenv.Timeout))
		if err == nil {
			nc.Close()
		}
		return errors.Is(err, nats.ErrAuthorization)
	})
	_, dialErr := mustRefuse(t, env, "an expired credential", alice.Creds)
	if !strings.Contains(dialErr.Error(), "refused the credential") {
		t.Errorf("client.Dial does not say the credential was refused: %v", dialErr)
	}
}

// Every claim of a user JWT, its permissions above all now, is covered by
// its account's signature: an edited one is refused.
func TestTamperedCredsRefused(t *testing.T) {
	t.Parallel()
	env := testenv.New(t)
	alice, err := env.Auth.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	env.Dial(env.Creds(accounts.RoleUser, "bob", "a")) // the server takes an untouched one
	for what, creds := range map[string][]byte{
		"tag changed":        tamper(t, alice.Creds, `"pool:a"`, `"pool:b"`),
		"name changed":       tamper(t, alice.Creds, `"name":"alice"`, `"name":"admin"`),
		"role changed":       tamper(t, alice.Creds, `"role:user"`, `"role:admin"`),
		"API widened":        tamper(t, alice.Creds, `"outpost.api.alice.*"`, `"outpost.api.*.*"`),
		"reader widened":     tamper(t, alice.Creds, `"$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.r_alice_1"`, `"$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.*"`),
		"issuer changed":     tamper(t, alice.Creds, alice.Account, env.Auth.WorkPublicKey()),
		"account claimed":    tamper(t, alice.Creds, `"type":"user"`, `"issuer_account":"`+env.Auth.WorkPublicKey()+`","type":"user"`),
		"permissions erased": tamper(t, alice.Creds, `"pub":{"allow":[`, `"pub":{"deny":[`),
	} {
		if _, err := accounts.ParseCreds(creds); err == nil {
			t.Errorf("%s: ParseCreds accepted it", what)
		}
		// nats.go sends the JWT as it is; the server checks the signature.
		refusedAuth(t, env, what, creds)
	}
}

// mustRefuse checks that the server refuses creds at connect, both to a
// plain nats.go client and to client.Dial, and returns their errors.
func mustRefuse(t *testing.T, env *testenv.Env, what string, creds []byte) (natsErr, dialErr error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "refused.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	nc, natsErr := nats.Connect(env.URL, nats.UserCredentials(path), nats.NoReconnect(), nats.Timeout(testenv.Timeout))
	if natsErr == nil {
		nc.Close()
		t.Fatalf("%s: the server let it in", what)
	}
	c, dialErr := client.Dial(testenv.Context(t), client.DialOptions{URL: env.URL, Creds: path, Logger: env.Logs.Logger()})
	if dialErr == nil {
		c.Close()
		t.Fatalf("%s: client.Dial got in", what)
	}
	return natsErr, dialErr
}

// refusedAuth checks that the server refuses creds as an authorization
// violation.
func refusedAuth(t *testing.T, env *testenv.Env, what string, creds []byte) {
	t.Helper()
	if err, _ := mustRefuse(t, env, what, creds); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("%s: refused with %v", what, err)
	}
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
