package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/internal/testenv"
)

// TestPlainClientSubmitFollowReplay is a third-party client: nats.go only,
// subjects spelled out from the README. It submits by request with its
// private inbox prefix, follows the job live with a core subscription, and
// replays it from the first event through the reader consumer pinned to its
// name, checking the documented headers.
func TestPlainClientSubmitFollowReplay(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{})
	nc := dialNATS(t, c.url, c.creds("admin"), "_INBOX_admin")

	// The job waits for the gate, so the subscription is in place before it
	// prints anything.
	gate := filepath.Join(t.TempDir(), "gate")
	spec, err := json.Marshal(map[string]any{
		"tag":     "local",
		"command": []string{"sh", "-c", `while [ ! -e "$GATE" ]; do sleep 0.02; done; echo one; echo two >&2; echo three`},
		"env":     map[string]string{"GATE": gate},
		"timeout": "1m",
	})
	if err != nil {
		t.Fatal(err)
	}
	reply := nc.request(t, "outpost.api.admin.submit", spec)
	if reply.Error != nil || reply.Job == nil {
		t.Fatalf("submit: %+v", reply)
	}
	job := *reply.Job
	if !jobIDRE.MatchString(job.ID) || job.State != "queued" || job.Owner != "admin" || job.Tag != "local" || job.Attempt != 1 {
		t.Errorf("submit reply: %+v", job)
	}

	live := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe("outpost.live.local.admin."+job.ID+".>", live)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// Once Flush returns the server has the subscription.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var end statusEvent
	timeout := time.After(jobTimeout)
	for !terminal(end.State) {
		select {
		case m := <-live:
			switch {
			case strings.HasSuffix(m.Subject, ".log"):
				out[m.Header.Get("Outpost-Stream")] += string(m.Data)
			case strings.HasSuffix(m.Subject, ".status"):
				if err := json.Unmarshal(m.Data, &end); err != nil {
					t.Fatalf("status event %s: %v", m.Data, err)
				}
			default:
				t.Errorf("message on unexpected subject %s", m.Subject)
			}
		case <-timeout:
			t.Fatalf("no terminal status within %s; lines so far: %q", jobTimeout, out)
		}
	}
	if end.State != "succeeded" || exitCode(end.ExitCode) != "0" || end.Agent != "local-agent" || end.Job != job.ID {
		t.Errorf("terminal status followed live: %+v", end)
	}
	if out["stdout"] != "one\nthree\n" || out["stderr"] != "two\n" {
		t.Errorf("lines followed live: %q, want stdout \"one\\nthree\\n\", stderr \"two\\n\"", out)
	}

	// The live copies are sent once stored; the record follows the stored
	// events a moment later.
	testenv.EventuallyWithin(t, jobTimeout, "the job's record to be final", func() bool {
		reply = nc.request(t, "outpost.api.admin.get", []byte(`{"id":"`+job.ID+`"}`))
		return reply.Job != nil && terminal(reply.Job.State)
	})
	if reply.Job.State != "succeeded" || exitCode(reply.Job.ExitCode) != "0" {
		t.Errorf("get: %+v", reply.Job)
	}
	checkReplay(t, nc, job.ID)
	reply = nc.request(t, "outpost.api.admin.list", []byte(`{"tag":"local","state":"succeeded","limit":10}`))
	if len(reply.Jobs) != 1 || reply.Jobs[0].ID != job.ID {
		t.Errorf("list: %+v", reply)
	}

	// Without its inbox prefix a client cannot subscribe to its replies.
	stray := dialNATS(t, c.url, c.creds("admin"), "")
	if _, err := stray.Request("outpost.api.admin.get", []byte(`{"id":"`+job.ID+`"}`), time.Second); err == nil {
		t.Errorf("a request with the default inbox prefix got a reply")
	}
	stray.waitDenied(t, "_INBOX.")
}

// checkReplay replays a finished job's events through the reader consumer
// the coordinator makes on request, pulled with a bare MSG.NEXT request as
// any client can, and checks their order and headers: the queued, running
// and succeeded states in order, and log messages whose line numbers
// (Outpost-Seq) run 1, 2, 3 across both streams.
func checkReplay(t *testing.T, nc *natsConn, id string) {
	t.Helper()
	reply := nc.request(t, "outpost.api.admin.read", []byte(`{"job":"`+id+`"}`))
	if reply.Reader == nil || reply.Reader.Stream != "OUTPOST_EVENTS" || reply.Reader.Consumer != "r_admin_1" {
		t.Fatalf("read: %+v", reply)
	}
	defer func() {
		if r := nc.request(t, "outpost.api.admin.release", []byte(`{"consumer":"r_admin_1"}`)); r.Error != nil {
			t.Errorf("release r_admin_1: %+v", r.Error)
		}
	}()
	msgs := pullAll(t, nc, "OUTPOST_EVENTS", "r_admin_1", reply.Reader.Pending)
	var states []string
	lines := map[int]string{} // line number -> stream and text
	out := map[string]string{}
	for _, m := range msgs {
		subj := m.Subject
		if !strings.HasPrefix(subj, "outpost.ev.local.admin."+id+".") {
			t.Errorf("replayed a message on %s", subj)
			continue
		}
		if strings.HasSuffix(subj, ".status") {
			var ev statusEvent
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatalf("status event %s: %v", m.Data, err)
			}
			if len(lines) > 0 && ev.State != "succeeded" {
				t.Errorf("status %s replayed after log lines", ev.State)
			}
			states = append(states, ev.State)
			continue
		}
		h := m.Header
		stream, attempt, seqText := h.Get("Outpost-Stream"), h.Get("Outpost-Attempt"), h.Get("Outpost-Seq")
		seq, err := strconv.Atoi(seqText)
		if err != nil || attempt != "1" || (stream != "stdout" && stream != "stderr") {
			t.Errorf("log message headers: %v", h)
			continue
		}
		if got, want := h.Get("Nats-Msg-Id"), id+".1."+seqText; got != want {
			t.Errorf("Nats-Msg-Id %q, want %q", got, want)
		}
		out[stream] += string(m.Data)
		for i, l := range strings.Split(strings.TrimSuffix(string(m.Data), "\n"), "\n") {
			if prev, dup := lines[seq+i]; dup {
				t.Errorf("line %d replayed twice: %q and %q", seq+i, prev, l)
			}
			lines[seq+i] = stream + " " + l
		}
	}
	if !slices.Equal(states, []string{"queued", "running", "succeeded"}) {
		t.Errorf("replayed states %v, want queued, running, succeeded", states)
	}
	if out["stdout"] != "one\nthree\n" || out["stderr"] != "two\n" {
		t.Errorf("replayed lines %q, want stdout \"one\\nthree\\n\", stderr \"two\\n\"", out)
	}
	for n := 1; n <= 3; n++ {
		if _, ok := lines[n]; !ok {
			t.Errorf("no line numbered %d among %v", n, lines)
		}
	}
}

// TestNATSCLIRecipes runs the README's recipes for the stock nats CLI as
// written: API requests, a live subscription, a pinned replay consumer for
// the admin, and the raw consumer-create request a user needs.
func TestNATSCLIRecipes(t *testing.T) {
	requireNATSTools(t)
	t.Parallel()
	// The data directory is ./.outpost, as 'make run' leaves it, so the
	// README's relative paths work as written, and so does outpost's
	// default creds.
	home := t.TempDir()
	c := startCoordinator(t, coordOptions{
		data:  filepath.Join(home, ".outpost"),
		creds: []accounts.Request{{Name: "alice", Role: accounts.RoleUser, Tags: []string{"local"}}},
	})
	me := session{dir: home, server: c.url}
	admin := []string{"-s", c.url, "--creds", ".outpost/creds/admin.creds", "--inbox-prefix", "_INBOX_admin"}
	n := func(args ...string) result {
		t.Helper()
		return natsCLI(t, home, c.url, append(slices.Clone(admin), args...)...)
	}
	request := func(args ...string) apiReply {
		t.Helper()
		r := n(append([]string{"req"}, args...)...)
		var reply apiReply
		if err := json.Unmarshal([]byte(r.stdout), &reply); r.code != 0 || err != nil {
			t.Fatalf("nats req %s: %v\n%s", args[0], err, r)
		}
		return reply
	}

	reply := request("outpost.api.admin.submit", `{"tag":"local","command":["sh","-c","echo hi; echo oops >&2"],"timeout":"1m"}`)
	if reply.Job == nil {
		t.Fatalf("submit: %+v", reply)
	}
	id := reply.Job.ID
	testenv.EventuallyWithin(t, jobTimeout, "the job to succeed", func() bool {
		reply = request("outpost.api.admin.get", `{"id":"`+id+`"}`)
		return reply.Job != nil && reply.Job.State == "succeeded"
	})
	reply = request("outpost.api.admin.list", `{"tag":"local","state":"succeeded","limit":10}`)
	if len(reply.Jobs) != 1 || reply.Jobs[0].ID != id {
		t.Errorf("list: %+v", reply)
	}

	// Replay: ask the coordinator for a reader consumer, read it, give it back.
	reply = request("outpost.api.admin.read", `{"job":"`+id+`"}`)
	if reply.Reader == nil || reply.Reader.Consumer != "r_admin_1" {
		t.Fatalf("read: %+v", reply)
	}
	r := n("consumer", "next", "OUTPOST_EVENTS", "r_admin_1", "--count", strconv.Itoa(reply.Reader.Pending), "--no-ack", "--raw")
	checkNext(t, r, []string{"hi", "oops"}, "queued", "running", "succeeded")
	if reply = request("outpost.api.admin.release", `{"consumer":"r_admin_1"}`); reply.Error != nil {
		t.Errorf("release: %+v", reply.Error)
	}
	if reply = request("outpost.api.admin.read", `{"job":"`+id+`"}`); reply.Reader == nil || reply.Reader.Consumer != "r_admin_1" {
		t.Errorf("after release, read got %+v; want slot 1 again", reply)
	}
	request("outpost.api.admin.release", `{"consumer":"r_admin_1"}`)

	// Follow live. The job prints until it is stopped, so whatever moment
	// the subscription starts at, it sees lines, then the stop.
	sub := startProc(t, home, natsEnv(home, c.url), bins.nats, append(slices.Clone(admin), "sub", "outpost.live.local.admin.*.>")...)
	testenv.EventuallyWithin(t, startTimeout, "nats sub to subscribe", func() bool {
		return strings.Contains(sub.stdout.String()+sub.stderr.String(), "Subscribing on")
	})
	reply = request("outpost.api.admin.submit", `{"tag":"local","command":["sh","-c","while :; do echo tick; sleep 0.05; done"]}`)
	if reply.Job == nil {
		t.Fatalf("submit: %+v", reply)
	}
	ticker := reply.Job.ID
	testenv.EventuallyWithin(t, jobTimeout, "nats sub to show the job's lines", func() bool {
		return strings.Contains(sub.stdout.String(), `Received on "outpost.live.local.admin.`+ticker+`.log"`)
	})
	// A stop before the record says running would treat the job as queued.
	me.waitState(t, ticker, "running")
	reply = request("outpost.api.admin.stop", `{"id":"`+ticker+`","force":true}`)
	if reply.Job == nil || reply.Job.ID != ticker {
		t.Fatalf("stop: %+v", reply)
	}
	testenv.EventuallyWithin(t, jobTimeout, "nats sub to show the job stopped", func() bool {
		return strings.Contains(sub.stdout.String(), `{"job":"`+ticker+`","state":"stopped"`)
	})
	if rec := me.waitState(t, ticker); rec.State != "stopped" || exitCode(rec.ExitCode) != "137" {
		t.Errorf("force-stopped job: state %s, exit code %s; want stopped, 137", rec.State, exitCode(rec.ExitCode))
	}

	// A user creates the same consumer with one raw request, then reads it
	// with consumer next. The recipe names alice.creds in the current
	// directory and takes the server from NATS_URL.
	if err := os.Link(c.creds("alice"), filepath.Join(home, "alice.creds")); err != nil {
		t.Fatal(err)
	}
	alice := []string{"--creds", "alice.creds", "--inbox-prefix", "_INBOX_alice"}
	asAlice := func(args ...string) result {
		t.Helper()
		return natsCLI(t, home, c.url, append(slices.Clone(alice), args...)...)
	}
	r = asAlice("req", "outpost.api.alice.submit", `{"tag":"local","command":["echo","from alice"]}`)
	if err := json.Unmarshal([]byte(r.stdout), &reply); err != nil || reply.Job == nil {
		t.Fatalf("alice's submit: %v\n%s", err, r)
	}
	aliceJob := reply.Job.ID
	if rec := c.as("alice").waitState(t, aliceJob); rec.State != "succeeded" {
		t.Fatalf("alice's job ended %s", rec.State)
	}
	r = asAlice("req", "outpost.api.alice.read", `{"job":"`+aliceJob+`"}`)
	if err := json.Unmarshal([]byte(r.stdout), &reply); err != nil || reply.Reader == nil {
		t.Fatalf("alice's read: %v\n%s", err, r)
	}
	r = asAlice("consumer", "next", "OUTPOST_EVENTS", reply.Reader.Consumer, "--count", strconv.Itoa(reply.Reader.Pending), "--no-ack", "--raw")
	checkNext(t, r, []string{"from alice"}, "queued", "running", "succeeded")
	asAlice("req", "outpost.api.alice.release", `{"consumer":"`+reply.Reader.Consumer+`"}`)

	// What a user may not do: make a consumer of her own (her account has
	// no JetStream), or read the admin's job (her reader is filtered to
	// her own jobs, so it holds nothing).
	if r := asAlice("--timeout", "1s", "consumer", "add", "OUTPOST_EVENTS", "r_alice_1", "--pull", "--deliver", "all", "--ack", "none", "--defaults"); r.code == 0 {
		t.Errorf("alice ran nats consumer add:\n%s", r)
	}
	r = asAlice("req", "outpost.api.alice.read", `{"job":"`+id+`"}`)
	if err := json.Unmarshal([]byte(r.stdout), &reply); err != nil || reply.Reader == nil || reply.Reader.Pending != 0 {
		t.Errorf("alice's read of the admin's job: %v\n%s", err, r)
	}
}

// natsEnv is the environment of the nats CLI: the server in NATS_URL, and
// a home of the test's own, so that no nats context of the user's applies.
func natsEnv(home, url string) []string {
	return baseEnv("NATS_URL="+url, "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
}

func natsCLI(t testing.TB, home, url string, args ...string) result {
	t.Helper()
	return runCmd(t, home, natsEnv(home, url), bins.nats, args...)
}

// checkNext checks what 'nats consumer next --raw' printed for a finished
// job: its status events in order with its log lines between running and
// the end. Asked for more messages than the job has, the CLI waits its
// --timeout for the rest and exits 1 with "no message received"; that is
// expected, as long as everything was printed.
func checkNext(t *testing.T, r result, lines []string, states ...string) {
	t.Helper()
	if r.code != 0 && !strings.Contains(r.stderr, "no message received") {
		t.Errorf("nats consumer next:\n%s", r)
	}
	var got, text []string
	for _, l := range strings.Split(r.stdout, "\n") {
		var ev statusEvent
		switch {
		case l == "":
		case json.Unmarshal([]byte(l), &ev) == nil && ev.State != "":
			got = append(got, ev.State)
		default:
			if len(got) < 2 || terminal(got[len(got)-1]) {
				t.Errorf("log line %q outside the running state", l)
			}
			text = append(text, l)
		}
	}
	slices.Sort(text)
	want := slices.Sorted(slices.Values(lines))
	if !slices.Equal(got, states) || !slices.Equal(text, want) {
		t.Errorf("nats consumer next printed states %v and lines %q; want %v and %q\n%s", got, text, states, want, r)
	}
}
