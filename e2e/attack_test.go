package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

// attackCase is one attack: who makes it (the name of a credential the
// admin issued), what it tries, and the check that the NATS server or the
// coordinator refused it and that its effect did not happen.
type attackCase struct {
	who, what string
	run       func(t *testing.T, w *world)
}

// TestAttackMatrix makes each attack of attackCases, by the role it suits,
// against one coordinator, and checks each refusal concretely: the
// permission violation the server reports for that subject, the API error
// code, the refused connection, or, where the target does not exist in the
// attacker's own account, that it is intact and nothing reached it; and,
// where there is one, that the forbidden effect did not happen (nothing
// stored, submitted, stopped, issued, made or deleted). Credentials come
// from 'outpost admin ... add', except for the forged ones.
func TestAttackMatrix(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	cases := attackCases()
	t.Logf("%d attack cases", len(cases))
	t.Run("attacks", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.who+": "+tc.what, func(t *testing.T) {
				t.Parallel()
				tc.run(t, w)
			})
		}
	})

	// Whatever the attacks did, bob's gated job ran undisturbed to its end,
	// and nothing else changed.
	if err := os.WriteFile(w.gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rec := w.c.admin.waitState(t, w.bobRunning)
	if rec.State != "succeeded" || rec.Attempt != 1 || rec.Agent != "local-agent" || rec.StopRequested {
		t.Errorf("bob's job after the attacks: %+v, want succeeded at attempt 1 on local-agent, never asked to stop", rec)
	}
	if r := w.c.admin.mustOutpost(t, "logs", w.bobRunning); r.stdout != "bob done\n" || r.stderr != "" {
		t.Errorf("bob's job's output after the attacks:\n%s", r)
	}
	if fileExists(w.mark) {
		t.Errorf("a forged submit ran: %s exists", w.mark)
	}
	w.requireNoNewJobs(t)
	// No redirected event reached a listener later, either.
	w.requireUnheard(t, w.aliceJob, w.bJob)
	// Every reader consumer the attacks were given was released.
	for _, stream := range []string{"OUTPOST_EVENTS", "OUTPOST_AUDIT"} {
		for _, name := range w.consumers(t, stream) {
			if strings.HasPrefix(name, "r_") {
				t.Errorf("reader consumer %s of %s outlived its case", name, stream)
			}
		}
	}
}

// world is what the attacks run against: a coordinator with its local
// agent (tag local), and credentials issued through the admin API:
//
//	agent-b   agent of tag b (no agent process runs for b)
//	alice     user of tag local
//	bob       user of tag local
//	watcher   observer of tag b
//	mallory   user of tag local, revoked by an attack
//	brief     user of tag local, issued to expire within 2s
type world struct {
	c     *coord
	root  *natsConn // the coordinator's own credential: sees everything
	admin *natsConn
	creds map[string]string // name -> creds file
	// slots hands out each reader's consumer slots to the cases running at
	// once, so that no case is refused for want of a free slot.
	slots map[string]chan struct{}

	bobRunning string // bob's job, running until gate exists; prints nothing before
	bobDone    string // bob's finished job
	aliceJob   string // alice's finished job, whose lines are a forged submit and a forged stop
	bJob       string // a job of tag b, queued for good
	gate, mark string

	jobs        string // the job records before the attacks
	credentials string // the credential records before the attacks

	briefConn   *natsConn // connected as brief before it expired
	briefClosed chan struct{}
}

func newWorld(t *testing.T) *world {
	t.Helper()
	c := startCoordinator(t, coordOptions{})
	w := &world{c: c, creds: map[string]string{}, slots: map[string]chan struct{}{}}
	w.creds["agent-b"] = c.issue(t, "agent", "agent-b", "--tag", "b")
	w.creds["alice"] = c.issue(t, "user", "alice", "--tag", "local")
	w.creds["bob"] = c.issue(t, "user", "bob", "--tag", "local")
	w.creds["watcher"] = c.issue(t, "observer", "watcher", "--tag", "b")
	w.creds["mallory"] = c.issue(t, "user", "mallory", "--tag", "local")
	for _, reader := range []string{"alice", "bob", "watcher"} {
		w.slots[reader] = make(chan struct{}, subjects.ReaderSlots)
	}
	w.root = dialNATS(t, c.url, c.creds("coordinator"), "_INBOX_coordinator")
	w.admin = dialNATS(t, c.url, c.creds("admin"), "_INBOX_admin")

	dir := t.TempDir()
	w.gate, w.mark = filepath.Join(dir, "gate"), filepath.Join(dir, "forged-submit-ran")
	bob := w.session("bob")
	w.bobRunning = bob.submit(t, "--tag", "local", "--env", "GATE="+w.gate, "--",
		"sh", "-c", `while [ ! -e "$GATE" ]; do sleep 0.02; done; echo bob done`)
	w.bobDone = bob.submit(t, "--tag", "local", "--", "echo", "bob's secret")
	// Alice's job prints what an attacker would like a listener to act on:
	// a submit spec and a stop request for bob's job.
	submit := fmt.Sprintf(`{"tag":"local","command":["touch",%q]}`, w.mark)
	stop := fmt.Sprintf(`{"action":"stop","job":%q,"force":true}`, w.bobRunning)
	w.aliceJob = w.session("alice").submit(t, "--tag", "local", "--", "sh", "-c", `echo "$1"; echo "$2"`, "sh", submit, stop)
	w.bJob = c.admin.submit(t, "--tag", "b", "--", "true")
	for _, id := range []string{w.bobDone, w.aliceJob} {
		if rec := c.admin.waitState(t, id); rec.State != "succeeded" {
			t.Fatalf("setup job %s ended %s", id, rec.State)
		}
	}
	c.admin.waitState(t, w.bobRunning, "running")
	w.jobs = w.jobList(t)

	// Issued last, so that it is still valid for the connection made here;
	// the expiry attack waits for the server to end it.
	w.creds["brief"] = c.issue(t, "user", "brief", "--tag", "local", "--expires", "2s")
	w.briefClosed = make(chan struct{})
	w.briefConn = dialNATS(t, c.url, w.creds["brief"], "_INBOX_brief", nats.ClosedHandler(func(*nats.Conn) { close(w.briefClosed) }))
	w.credentials = w.credList(t)
	return w
}

func attackCases() []attackCase {
	var cases []attackCase
	add := func(who, what string, run func(t *testing.T, w *world)) {
		cases = append(cases, attackCase{who, what, run})
	}

	// --- An agent of tag b against tag local, the job queue and the streams.
	add("agent-b", "fetches from another tag's consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "agent-b", "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-local", `{"batch":1,"expires":1000000000}`)
	})
	add("agent-b", "reads another tag's consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "agent-b", "$JS.API.CONSUMER.INFO.OUTPOST_JOBS.agents-local", "")
	})
	add("agent-b", "reads the last status of another tag's job", func(t *testing.T, w *world) {
		w.reqDenied(t, "agent-b", "$JS.API.DIRECT.GET.OUTPOST_EVENTS.outpost.ev.local.bob."+w.bobDone+".status", "")
	})
	add("agent-b", "reads another tag's job status through its own tag's direct get", func(t *testing.T, w *world) {
		// The server takes the subject from the request's; a body naming
		// another is turned down.
		m, err := w.conn(t, "agent-b").Request("$JS.API.DIRECT.GET.OUTPOST_EVENTS.outpost.ev.b.bob."+w.bobDone+".status",
			[]byte(`{"last_by_subj":"outpost.ev.local.bob.`+w.bobDone+`.log"}`), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get("Status") != "408" || len(m.Data) != 0 {
			t.Errorf("got status %q and %q; want 408 Bad Request and nothing", m.Header.Get("Status"), m.Data)
		}
	})
	add("agent-b", "acks another tag's job", func(t *testing.T, w *world) {
		w.pubDenied(t, "agent-b", nats.NewMsg("$JS.ACK.OUTPOST_JOBS.agents-local.1.1.1.1.0.0"))
	})
	add("agent-b", "publishes a log line of another tag's job", func(t *testing.T, w *world) {
		subj := "outpost.ev.local.bob." + w.bobRunning + ".log"
		m := logLine(subj, "forged\n")
		w.pubDenied(t, "agent-b", m)
		if n := w.stored(t, "OUTPOST_EVENTS", subj); n != 0 {
			t.Errorf("%d messages stored on %s; bob's job has printed nothing", n, subj)
		}
	})
	add("agent-b", "publishes a status of another tag's job", func(t *testing.T, w *world) {
		subj := "outpost.ev.local.bob." + w.bobRunning + ".status"
		m := nats.NewMsg(subj)
		m.Data = []byte(`{"job":"` + w.bobRunning + `","state":"succeeded","attempt":1,"agent":"agent-b","exit_code":0}`)
		w.pubDenied(t, "agent-b", m)
		if n := w.stored(t, "OUTPOST_EVENTS", subj); n != 2 {
			t.Errorf("%d status events stored for bob's job, want 2 (queued, running)", n)
		}
		w.requireBobRunning(t)
	})
	add("agent-b", "stamps its own tag's event with another credential's identity", func(t *testing.T, w *world) {
		// The events reach OUTPOST through the agent's import, and the
		// server stamps each with the account it came from, over any stamp
		// the agent wrote itself.
		subj := "outpost.ev.b.admin." + w.bJob + ".log"
		m := logLine(subj, "stamped\n")
		admin := w.record(t, "admin")
		m.Header.Set("Nats-Request-Info", fmt.Sprintf(`{"acc":%q,"user":%q}`, admin.Account, admin.PublicKey))
		m.Header.Set("Nats-Msg-Id", "stamp-"+w.bJob)
		nc := w.conn(t, "agent-b")
		if _, err := nc.js.PublishMsg(ctxT(t), m); err != nil {
			t.Fatalf("publish on its own tag: %v (async errors %q)", err, nc.asyncErrors())
		}
		s, err := w.root.js.Stream(ctxT(t), "OUTPOST_EVENTS")
		if err != nil {
			t.Fatal(err)
		}
		stored, err := s.GetLastMsgForSubject(ctxT(t), subj)
		if err != nil {
			t.Fatal(err)
		}
		// No stamp, or the server's own: agent-b's account, and no user.
		if stamp := stored.Header.Get("Nats-Request-Info"); stamp != "" {
			var id struct {
				Account string `json:"acc"`
				User    string `json:"user"`
			}
			if err := json.Unmarshal([]byte(stamp), &id); err != nil || id.Account != w.record(t, "agent-b").Account || id.User != "" {
				t.Errorf("the stored event is stamped %s, want agent-b's own account and no user", stamp)
			}
		}
	})
	add("agent-b", "publishes a heartbeat on another tag", func(t *testing.T, w *world) {
		w.pubDenied(t, "agent-b", nats.NewMsg("outpost.hb.local.agent-b"))
	})
	add("agent-b", "publishes a heartbeat as another agent", func(t *testing.T, w *world) {
		w.pubDenied(t, "agent-b", nats.NewMsg("outpost.hb.b.local-agent"))
	})
	add("agent-b", "sends a stop request on its own tag", func(t *testing.T, w *world) {
		m := nats.NewMsg("outpost.ctl.b." + w.bJob)
		m.Reply = "_INBOX_coordinator.ctl"
		m.Data = []byte(`{"action":"stop","job":"` + w.bJob + `"}`)
		w.pubDenied(t, "agent-b", m)
	})
	add("agent-b", "listens to another tag's stop requests", func(t *testing.T, w *world) {
		w.subDenied(t, "agent-b", "outpost.ctl.local.*")
	})
	add("agent-b", "listens to the whole job queue", func(t *testing.T, w *world) {
		w.subDenied(t, "agent-b", "outpost.jobs.>")
	})
	add("agent-b", "follows another tag's events live", func(t *testing.T, w *world) {
		w.subDenied(t, "agent-b", "outpost.live.local.>")
	})
	add("agent-b", "creates a stream", func(t *testing.T, w *world) {
		nc := w.conn(t, "agent-b")
		nc.requireDenied(t, "$JS.API.STREAM.CREATE.ROGUE", func(ctx context.Context) error {
			_, err := nc.js.CreateStream(ctx, jetstream.StreamConfig{Name: "ROGUE", Subjects: []string{"outpost.ctl.>"}})
			return err
		})
		if _, err := w.root.js.Stream(ctxT(t), "ROGUE"); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("stream ROGUE: %v, want not found", err)
		}
	})
	add("agent-b", "deletes the events stream", func(t *testing.T, w *world) {
		w.reqDenied(t, "agent-b", "$JS.API.STREAM.DELETE.OUTPOST_EVENTS", "")
		w.requireStream(t, "OUTPOST_EVENTS")
	})
	add("agent-b", "updates the jobs stream", func(t *testing.T, w *world) {
		nc := w.conn(t, "agent-b")
		before := w.requireStream(t, "OUTPOST_JOBS")
		cfg := before
		cfg.MaxAge = time.Second
		nc.requireDenied(t, "$JS.API.STREAM.UPDATE.OUTPOST_JOBS", func(ctx context.Context) error {
			_, err := nc.js.UpdateStream(ctx, cfg)
			return err
		})
		if after := w.requireStream(t, "OUTPOST_JOBS"); after.MaxAge != before.MaxAge {
			t.Errorf("OUTPOST_JOBS max age changed from %s to %s", before.MaxAge, after.MaxAge)
		}
	})
	add("agent-b", "purges the jobs stream", func(t *testing.T, w *world) {
		w.reqDenied(t, "agent-b", "$JS.API.STREAM.PURGE.OUTPOST_JOBS", "")
		if n := w.stored(t, "OUTPOST_JOBS", "outpost.jobs.b."+w.bJob); n != 1 {
			t.Errorf("the queued job of tag b: %d messages in OUTPOST_JOBS, want 1", n)
		}
	})
	add("agent-b", "creates a consumer on another tag's jobs", func(t *testing.T, w *world) {
		nc := w.conn(t, "agent-b")
		nc.requireDenied(t, "$JS.API.CONSUMER.CREATE.OUTPOST_JOBS.agents-rogue", func(ctx context.Context) error {
			_, err := nc.js.CreateConsumer(ctx, "OUTPOST_JOBS", jetstream.ConsumerConfig{Durable: "agents-rogue", FilterSubject: "outpost.jobs.local.>"})
			return err
		})
		w.requireNoConsumer(t, "OUTPOST_JOBS", "agents-rogue")
	})
	add("agent-b", "deletes its own tag's consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "agent-b", "$JS.API.CONSUMER.DELETE.OUTPOST_JOBS.agents-b", "")
		w.requireConsumer(t, "OUTPOST_JOBS", "agents-b")
	})
	add("agent-b", "updates its own tag's consumer", func(t *testing.T, w *world) {
		nc := w.conn(t, "agent-b")
		before := w.requireConsumer(t, "OUTPOST_JOBS", "agents-b")
		cfg := before
		cfg.FilterSubject, cfg.AckWait = "outpost.jobs.>", time.Hour
		nc.requireDenied(t, "$JS.API.CONSUMER.CREATE.OUTPOST_JOBS.agents-b", func(ctx context.Context) error {
			_, err := nc.js.UpdateConsumer(ctx, "OUTPOST_JOBS", cfg)
			return err
		})
		// The old, unfiltered form of the same request.
		body, _ := json.Marshal(map[string]any{"stream_name": "OUTPOST_JOBS", "config": cfg})
		w.reqDenied(t, "agent-b", "$JS.API.CONSUMER.DURABLE.CREATE.OUTPOST_JOBS.agents-b", string(body))
		if after := w.requireConsumer(t, "OUTPOST_JOBS", "agents-b"); after.FilterSubject != before.FilterSubject || after.AckWait != before.AckWait {
			t.Errorf("agents-b changed: filter %s, ack wait %s", after.FilterSubject, after.AckWait)
		}
	})
	add("agent-b", "deletes the coordinator's consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "agent-b", "$JS.API.CONSUMER.DELETE.OUTPOST_EVENTS.coordinator", "")
		w.requireConsumer(t, "OUTPOST_EVENTS", "coordinator")
	})
	add("agent-b", "updates the coordinator's consumer", func(t *testing.T, w *world) {
		nc := w.conn(t, "agent-b")
		before := w.requireConsumer(t, "OUTPOST_EVENTS", "coordinator")
		cfg := before
		cfg.FilterSubject = "outpost.ev.b.>"
		nc.requireDenied(t, "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.coordinator", func(ctx context.Context) error {
			_, err := nc.js.UpdateConsumer(ctx, "OUTPOST_EVENTS", cfg)
			return err
		})
		if after := w.requireConsumer(t, "OUTPOST_EVENTS", "coordinator"); after.FilterSubject != before.FilterSubject {
			t.Errorf("the coordinator's consumer now filters %s", after.FilterSubject)
		}
	})
	add("agent-b", "pulls from the coordinator's consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "agent-b", "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.coordinator", `{"batch":1,"expires":1000000000}`)
	})
	add("agent-b", "reads another credential's inbox", func(t *testing.T, w *world) {
		w.subDenied(t, "agent-b", "_INBOX_alice.>")
	})
	add("agent-b", "makes an API request", func(t *testing.T, w *world) {
		w.reqDenied(t, "agent-b", "outpost.api.agent-b.submit", `{"tag":"b","command":["true"]}`)
		w.requireNoNewJobs(t)
	})
	add("agent-b", "asks the coordinator for a reader consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "agent-b", "outpost.api.agent-b.read", `{"job":"`+w.bJob+`"}`)
		w.requireNoConsumer(t, "OUTPOST_EVENTS", "r_agent-b_1")
	})
	add("agent-b", "reads the credentials bucket", func(t *testing.T, w *world) {
		w.subDenied(t, "agent-b", "$KV.outpost_creds.>")
		w.reqDenied(t, "agent-b", "$JS.API.DIRECT.GET.KV_outpost_creds.$KV.outpost_creds.admin", "")
	})
	add("agent-b", "reads a job record", func(t *testing.T, w *world) {
		w.reqDenied(t, "agent-b", "$JS.API.STREAM.MSG.GET.KV_outpost_jobs", `{"last_by_subj":"$KV.outpost_jobs.`+w.bobDone+`"}`)
	})

	// --- A user against another user, other tags and the admin verbs.
	add("alice", "submits as another user", func(t *testing.T, w *world) {
		w.reqDenied(t, "alice", "outpost.api.bob.submit", `{"tag":"local","command":["touch","`+w.mark+`"]}`)
		w.requireNoNewJobs(t)
	})
	add("alice", "forges the requester stamp of an API request", func(t *testing.T, w *world) {
		// The server writes the stamp of a request that crosses into
		// OUTPOST itself: alice's claim to be the admin is overwritten, and
		// she is answered as herself.
		admin := w.record(t, "admin")
		m := nats.NewMsg("outpost.api.alice.creds")
		m.Header.Set("Nats-Request-Info", fmt.Sprintf(`{"acc":%q,"user":%q}`, admin.Account, admin.PublicKey))
		m.Data = []byte(`{}`)
		nc := w.conn(t, "alice")
		resp, err := nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatalf("request: %v (async errors %q)", err, nc.asyncErrors())
		}
		var reply apiReply
		if err := json.Unmarshal(resp.Data, &reply); err != nil {
			t.Fatalf("reply: %v\n%s", err, resp.Data)
		}
		requireAPIError(t, reply, "forbidden", `user "alice" may not manage credentials`)
	})
	add("alice", "reads another user's job", func(t *testing.T, w *world) {
		reply := w.call(t, "alice", "get", `{"id":"`+w.bobDone+`"}`)
		requireAPIError(t, reply, "not_found", "no job "+w.bobDone)
		if r := w.session("alice").outpost(t, "status", w.bobDone); r.code == 0 || !strings.Contains(r.stderr, "not_found") {
			t.Errorf("outpost status of bob's job as alice:\n%s", r)
		}
	})
	add("alice", "lists another user's jobs", func(t *testing.T, w *world) {
		reply := w.call(t, "alice", "list", `{"owner":"bob"}`)
		if reply.Error != nil || len(reply.Jobs) != 0 {
			t.Errorf("alice listing bob's jobs got %+v (error %+v), want an empty list", reply.Jobs, reply.Error)
		}
	})
	add("alice", "creates a reader consumer over another user's job", func(t *testing.T, w *world) {
		f := "outpost.ev.*.bob." + w.bobRunning + ".>"
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_1."+f, readerBody("r_alice_1", f, ""))
		w.requireNoConsumerWith(t, "OUTPOST_EVENTS", f, "")
	})
	add("alice", "asks the coordinator to read another user's job", func(t *testing.T, w *world) {
		nc := w.conn(t, "alice")
		rd := w.read(t, nc, "alice", `{"job":"`+w.bobDone+`"}`)
		if rd.Stream != "OUTPOST_EVENTS" || rd.Pending != 0 {
			t.Errorf("alice's reader over bob's job: %+v, want an empty one on OUTPOST_EVENTS", rd)
		}
		if cfg := w.requireConsumer(t, rd.Stream, rd.Consumer); cfg.FilterSubject != "outpost.ev.*.alice."+w.bobDone+".>" || cfg.DeliverSubject != "" {
			t.Errorf("alice's reader filters %q (deliver subject %q), want her own jobs only, pulled", cfg.FilterSubject, cfg.DeliverSubject)
		}
		if msgs, status := pullHere(t, nc, rd, 1); len(msgs) != 0 || status != "404" {
			t.Errorf("alice's pull over bob's job: %d messages, status %s; want none, 404", len(msgs), status)
		}
		w.holdSlot(t, "alice")
		if r := w.session("alice").outpost(t, "logs", w.bobDone); r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "no events visible to alice") {
			t.Errorf("outpost logs of bob's job as alice:\n%s", r)
		}
	})
	add("alice", "creates her pinned consumer with another user's filter in the body", func(t *testing.T, w *world) {
		f := "outpost.ev.*.bob." + w.bobRunning + ".>"
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_2.outpost.ev.*.alice."+w.bobRunning+".>", readerBody("r_alice_2", f, ""))
		w.requireNoConsumerWith(t, "OUTPOST_EVENTS", f, "")
	})
	add("alice", "names another reader's consumer as the durable", func(t *testing.T, w *world) {
		f := "outpost.ev.*.alice." + w.aliceJob + ".status"
		body := strings.Replace(readerBody("r_alice_3", f, ""), `"name":"r_alice_3"`, `"durable_name":"r_bob_1"`, 1)
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_3."+f, body)
		w.requireNoConsumerWith(t, "OUTPOST_EVENTS", f, "")
	})
	add("alice", "stops another user's job", func(t *testing.T, w *world) {
		reply := w.call(t, "alice", "stop", `{"id":"`+w.bobRunning+`","force":true}`)
		requireAPIError(t, reply, "not_found", "no job "+w.bobRunning)
		w.requireBobRunning(t)
	})
	for _, subj := range []string{"outpost.api.*.submit", "outpost.api.>", "outpost.api.bob.>"} {
		add("alice", "publishes an API request on "+subj, func(t *testing.T, w *world) {
			w.reqDenied(t, "alice", subj, `{"tag":"local","command":["true"]}`)
			w.requireNoNewJobs(t)
		})
	}
	for _, subj := range []string{"outpost.api.alice.bob.submit", "outpost.api.alice.submit.x"} {
		add("alice", "publishes an API request on the dotted "+subj, func(t *testing.T, w *world) {
			// Her account imports, and her permission allows, one verb
			// token after her name.
			w.reqDenied(t, "alice", subj, `{"tag":"local","command":["touch","`+w.mark+`"]}`)
			w.requireNoNewJobs(t)
		})
	}
	for _, name := range []string{"*", "r_*_1", "r_bob_1", "r_alice_1.x"} {
		add("alice", "creates a consumer named "+name, func(t *testing.T, w *world) {
			f := "outpost.ev.*.alice.>"
			w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS."+name+"."+f, readerBody(name, f, ""))
			w.requireNoConsumerWith(t, "OUTPOST_EVENTS", f, "")
		})
	}
	add("alice", "smuggles a full wildcard into her filter", func(t *testing.T, w *world) {
		f := "outpost.ev.>.alice.>"
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_3."+f, readerBody("r_alice_3", f, ""))
		// The coordinator builds the filter itself, from a job ID it checks.
		for _, job := range []string{">", "*", w.bobDone + ".>", "*.bob." + w.bobDone} {
			reply := w.call(t, "alice", "read", `{"job":"`+job+`"}`)
			requireAPIError(t, reply, "bad_request", "job ID")
		}
		w.requireNoConsumerWith(t, "OUTPOST_EVENTS", f, "")
	})
	add("alice", "adds another user's filter in filter_subjects", func(t *testing.T, w *world) {
		f := "outpost.ev.*.alice." + w.aliceJob + ".>"
		body := strings.Replace(readerBody("r_alice_3", f, ""), `"filter_subject":`, `"filter_subjects":["outpost.ev.*.bob.>"],"filter_subject":`, 1)
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_3."+f, body)
		// A read request takes no filter of the reader's.
		reply := w.call(t, "alice", "read", `{"job":"`+w.aliceJob+`","filter_subjects":["outpost.ev.*.bob.>"]}`)
		requireAPIError(t, reply, "bad_request", "filter_subjects")
		w.requireNoConsumerWith(t, "OUTPOST_EVENTS", "outpost.ev.*.bob.>", "")
	})
	add("alice", "creates a consumer through the legacy subjects", func(t *testing.T, w *world) {
		f := "outpost.ev.*.bob.>"
		body := readerBody("r_alice_1", f, "")
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS", body)
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.DURABLE.CREATE.OUTPOST_EVENTS.r_alice_1", strings.Replace(body, `"name"`, `"durable_name"`, 1))
		w.requireNoConsumerWith(t, "OUTPOST_EVENTS", f, "")
	})
	add("alice", "pulls from another reader's consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.r_bob_1", `{"batch":1,"expires":1000000000}`)
	})
	add("alice", "pulls from the agents' consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-local", `{"batch":1,"no_wait":true}`)
	})
	add("alice", "asks JetStream about her consumer", func(t *testing.T, w *world) {
		// Her account imports no JetStream API, so the server answers for
		// her own account, which has no JetStream, not for OUTPOST's.
		nc := w.conn(t, "alice")
		rd := w.read(t, nc, "alice", `{"job":"`+w.aliceJob+`"}`)
		m, err := nc.Request("$JS.API.CONSUMER.INFO."+rd.Stream+"."+rd.Consumer, nil, 10*time.Second)
		if err != nil {
			t.Fatalf("consumer info: %v (async errors %q)", err, nc.asyncErrors())
		}
		requireJSError(t, m, 10039)
	})
	add("alice", "releases another reader's consumer", func(t *testing.T, w *world) {
		bob := w.conn(t, "bob")
		rd := w.read(t, bob, "bob", `{"job":"`+w.bobDone+`"}`)
		reply := w.call(t, "alice", "release", `{"consumer":"`+rd.Consumer+`"}`)
		requireAPIError(t, reply, "bad_request", "is not one of your reader consumers")
		w.requireConsumer(t, rd.Stream, rd.Consumer)
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS."+rd.Consumer, `{"batch":1,"no_wait":true}`)
		// Bob's reader still gives him his job's events, from the first.
		if rd.Pending == 0 {
			t.Fatal("bob's reader over his finished job holds nothing")
		}
		if first := pullAll(t, bob, rd.Stream, rd.Consumer, rd.Pending)[0]; first.Subject != "outpost.ev.local.bob."+w.bobDone+".status" {
			t.Errorf("bob's reader gave %s first, want his job's queued status", first.Subject)
		}
	})
	add("alice", "releases the coordinator's and the agents' consumers", func(t *testing.T, w *world) {
		for _, name := range []string{"coordinator", "agents-local"} {
			reply := w.call(t, "alice", "release", `{"consumer":"`+name+`"}`)
			requireAPIError(t, reply, "bad_request", "is not one of your reader consumers")
		}
		w.requireConsumer(t, "OUTPOST_EVENTS", "coordinator")
		w.requireConsumer(t, "OUTPOST_JOBS", "agents-local")
	})
	add("alice", "follows another user's events", func(t *testing.T, w *world) {
		w.subDenied(t, "alice", "outpost.ev.local.bob.>")
	})
	add("alice", "follows another user's events live", func(t *testing.T, w *world) {
		w.subDenied(t, "alice", "outpost.live.local.bob.>")
		w.subDenied(t, "alice", "outpost.live.local.*.>")
	})
	add("alice", "listens to every API request", func(t *testing.T, w *world) {
		w.subDenied(t, "alice", "outpost.api.>")
	})
	add("alice", "reads another user's inbox", func(t *testing.T, w *world) {
		w.subDenied(t, "alice", "_INBOX_bob.>")
	})
	add("alice", "reads the stream info, which lists every job", func(t *testing.T, w *world) {
		w.reqDenied(t, "alice", "$JS.API.STREAM.INFO.OUTPOST_EVENTS", `{"subjects_filter":">"}`)
	})
	add("alice", "reads the audit trail", func(t *testing.T, w *world) {
		f := "outpost.audit.>"
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_AUDIT.r_alice_1."+f, readerBody("r_alice_1", f, ""))
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_AUDIT.r_alice_1", `{"batch":1,"no_wait":true}`)
	})
	add("alice", "asks the coordinator to read the audit trail", func(t *testing.T, w *world) {
		reply := w.call(t, "alice", "read", `{"audit":true}`)
		requireAPIError(t, reply, "forbidden", "may not read the audit trail")
		w.requireNoConsumer(t, "OUTPOST_AUDIT", "r_alice_1")
	})
	add("alice", "submits to a tag she does not hold", func(t *testing.T, w *world) {
		reply := w.call(t, "alice", "submit", `{"tag":"b","command":["touch","`+w.mark+`"]}`)
		requireAPIError(t, reply, "forbidden", `may not submit to tag "b"`)
		if r := w.session("alice").outpost(t, "run", "--tag", "b", "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "forbidden") {
			t.Errorf("outpost run --tag b as alice:\n%s", r)
		}
		w.requireNoNewJobs(t)
	})
	add("alice", "issues a credential", func(t *testing.T, w *world) {
		reply := w.call(t, "alice", "issue", `{"name":"alice2","role":"admin"}`)
		requireAPIError(t, reply, "forbidden", "may not manage credentials")
		r := w.session("alice").outpost(t, "admin", "user", "add", "alice3", "--role", "admin")
		if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "forbidden") {
			t.Errorf("outpost admin user add as alice:\n%s", r)
		}
		w.requireNoNewCreds(t, "alice2", "alice3")
	})
	add("alice", "revokes a credential", func(t *testing.T, w *world) {
		reply := w.call(t, "alice", "revoke", `{"name":"bob"}`)
		requireAPIError(t, reply, "forbidden", "may not manage credentials")
		if r := w.session("alice").outpost(t, "admin", "revoke", "bob"); r.code == 0 || !strings.Contains(r.stderr, "forbidden") {
			t.Errorf("outpost admin revoke as alice:\n%s", r)
		}
		w.requireNoNewCreds(t)
		nc := w.conn(t, "bob") // bob still gets in
		nc.Close()
	})
	add("alice", "lists the credentials", func(t *testing.T, w *world) {
		reply := w.call(t, "alice", "creds", `{}`)
		requireAPIError(t, reply, "forbidden", "may not manage credentials")
	})

	// --- An observer of tag b: reads only, and only tag b.
	add("watcher", "submits a job", func(t *testing.T, w *world) {
		reply := w.call(t, "watcher", "submit", `{"tag":"b","command":["touch","`+w.mark+`"]}`)
		requireAPIError(t, reply, "forbidden", "may not call submit")
		w.requireNoNewJobs(t)
	})
	add("watcher", "stops a job of its tag", func(t *testing.T, w *world) {
		reply := w.call(t, "watcher", "stop", `{"id":"`+w.bJob+`","force":true}`)
		requireAPIError(t, reply, "forbidden", "may not call stop")
		if rec := w.get(t, w.bJob); rec.State != "queued" || rec.StopRequested {
			t.Errorf("the job of tag b after the observer's stop: %+v", rec)
		}
	})
	add("watcher", "issues a credential", func(t *testing.T, w *world) {
		reply := w.call(t, "watcher", "issue", `{"name":"watcher2","role":"admin"}`)
		requireAPIError(t, reply, "forbidden", "may not call issue")
		w.requireNoNewCreds(t, "watcher2")
	})
	add("watcher", "calls the API under another name", func(t *testing.T, w *world) {
		w.reqDenied(t, "watcher", "outpost.api.admin.creds", `{}`)
	})
	add("watcher", "reads job records, its tag's or another's", func(t *testing.T, w *world) {
		// Records hold a job's env and stdin, which are its owner's:
		// observers read events, through 'read', and nothing else.
		for _, id := range []string{w.bobDone, w.bJob} {
			reply := w.call(t, "watcher", "get", `{"id":"`+id+`"}`)
			requireAPIError(t, reply, "forbidden", "may not call get")
		}
		reply := w.call(t, "watcher", "list", `{"tag":"b"}`)
		requireAPIError(t, reply, "forbidden", "may not call list")
	})
	add("watcher", "replays a tag it may not read", func(t *testing.T, w *world) {
		f := "outpost.ev.local.>"
		w.reqDenied(t, "watcher", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_watcher_1."+f, readerBody("r_watcher_1", f, ""))
		w.requireNoConsumerWith(t, "OUTPOST_EVENTS", f, "")
		nc := w.conn(t, "watcher")
		rd := w.read(t, nc, "watcher", `{"job":"`+w.bobDone+`"}`)
		if rd.Pending != 0 {
			t.Errorf("the observer of b was given a reader over a job of tag local holding %d messages", rd.Pending)
		}
		if cfg := w.requireConsumer(t, rd.Stream, rd.Consumer); cfg.FilterSubject != "outpost.ev.b.*."+w.bobDone+".>" {
			t.Errorf("the observer's reader filters %q, want its tag only", cfg.FilterSubject)
		}
		if msgs, status := pullHere(t, nc, rd, 1); len(msgs) != 0 || status != "404" {
			t.Errorf("the observer's pull over a job of tag local: %d messages, status %s; want none, 404", len(msgs), status)
		}
		w.holdSlot(t, "watcher")
		if r := w.session("watcher").outpost(t, "logs", w.bobDone); r.code == 0 || r.stdout != "" {
			t.Errorf("outpost logs of a job of tag local as the observer of b:\n%s", r)
		}
	})
	add("watcher", "follows a tag it may not read", func(t *testing.T, w *world) {
		w.subDenied(t, "watcher", "outpost.ev.local.>")
		w.subDenied(t, "watcher", "outpost.live.local.>")
	})
	add("watcher", "pulls from the coordinator's consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "watcher", "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.coordinator", `{"batch":1,"expires":1000000000}`)
	})
	add("watcher", "reads the coordinator's consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "watcher", "$JS.API.CONSUMER.INFO.OUTPOST_EVENTS.coordinator", "")
	})
	add("watcher", "deletes the coordinator's consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "watcher", "$JS.API.CONSUMER.DELETE.OUTPOST_EVENTS.coordinator", "")
		w.requireConsumer(t, "OUTPOST_EVENTS", "coordinator")
	})

	// --- Readers redirecting stored messages onto subjects that act
	// (NATS-NOTES point 5). A pull's reply subject is read in the reader's
	// own account, where only its imports exist: what lands on its own API
	// import, or on a subject it does not import, never reaches a listener
	// in OUTPOST. Push consumers, whose deliver subject would be OUTPOST's,
	// cannot be made at all. Each case reads through a consumer of its own.
	add("alice", "redirects her replay into the API with a pull request's reply subject", func(t *testing.T, w *world) {
		w.redirectReplay(t, "alice", w.aliceJob, "outpost.api.alice.submit")
		w.requireNoNewJobs(t)
	})
	add("alice", "redirects her replay onto another user's stop with a pull request's reply subject", func(t *testing.T, w *world) {
		if sent := w.redirectReplay(t, "alice", w.aliceJob, "outpost.api.bob.stop"); sent != 0 {
			t.Errorf("%d messages sent to bob's API, which nothing in alice's account hears", sent)
		}
		w.requireBobRunning(t)
	})
	add("alice", "redirects her replay onto another user's stop with a push consumer", func(t *testing.T, w *world) {
		f := "outpost.ev.*.alice." + w.aliceJob + ".status"
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_2."+f, readerBody("r_alice_2", f, "outpost.api.bob.stop"))
		reply := w.call(t, "alice", "read", `{"job":"`+w.aliceJob+`","deliver_subject":"outpost.api.bob.stop"}`)
		requireAPIError(t, reply, "bad_request", "deliver_subject")
		w.requireNoConsumerWith(t, "OUTPOST_EVENTS", f, "outpost.api.bob.stop")
		w.requireBobRunning(t)
	})
	add("alice", "redirects her replay onto a control subject with a pull request's reply subject", func(t *testing.T, w *world) {
		if sent := w.redirectReplay(t, "alice", w.aliceJob, "outpost.ctl.local."+w.bobRunning); sent != 0 {
			t.Errorf("%d messages sent to a control subject, which nothing in alice's account hears", sent)
		}
		w.requireBobRunning(t)
	})
	add("alice", "redirects her replay onto a control subject with a push consumer", func(t *testing.T, w *world) {
		f := "outpost.ev.*.alice." + w.aliceJob + ".log"
		target := "outpost.ctl.local." + w.bobRunning
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_4."+f, readerBody("r_alice_4", f, target))
		w.requireNoConsumerWith(t, "OUTPOST_EVENTS", f, target)
		w.requireBobRunning(t)
	})
	add("alice", "aims the coordinator's reply back into the API", func(t *testing.T, w *world) {
		// The reply crosses back into her account, onto her own API import:
		// a loop through one export, which the server cuts. Were it to
		// arrive, it would carry no reply subject, and the coordinator
		// drops requests without one.
		const probe = "0000000000000000000000loop"
		nc := w.conn(t, "alice")
		if err := nc.PublishRequest("outpost.api.alice.get", "outpost.api.alice.submit", []byte(`{"id":"`+probe+`"}`)); err != nil {
			t.Fatal(err)
		}
		w.waitLog(t, `verb=get code=not_found msg="no job `+probe)
		w.requireNoNewJobs(t)
		if strings.Contains(w.c.proc.stderr.String(), `msg="api request dropped" subject=outpost.api.alice.submit `) {
			t.Log("the looped reply reached the coordinator, which dropped it")
		}
	})
	add("watcher", "redirects its replay into the admin's API", func(t *testing.T, w *world) {
		if sent := w.redirectReplay(t, "watcher", w.bJob, "outpost.api.admin.submit"); sent != 0 {
			t.Errorf("%d messages sent to the admin's API, which nothing in the observer's account hears", sent)
		}
		w.requireNoNewJobs(t)
	})
	add("watcher", "redirects its replay into its own API", func(t *testing.T, w *world) {
		w.redirectReplay(t, "watcher", w.bJob, "outpost.api.watcher.read")
	})

	// --- Credentials that must not get in at all.
	add("mallory", "reconnects after being revoked", func(t *testing.T, w *world) {
		closed := make(chan struct{})
		live := dialNATS(t, w.c.url, w.creds["mallory"], "_INBOX_mallory", nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
		w.c.admin.mustOutpost(t, "admin", "revoke", "mallory")
		select {
		case <-closed:
		case <-time.After(jobTimeout):
			t.Fatal("the revoked credential's live connection stayed open")
		}
		if errs := live.asyncErrors(); !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, "revoked") }) {
			t.Errorf("the live connection ended with %q, want a revocation", errs)
		}
		requireRefused(t, w.c.url, w.creds["mallory"])
		r := w.session("mallory").outpost(t, "whoami")
		if r.code == 0 || !strings.Contains(r.stderr, "refused the credential") {
			t.Errorf("outpost whoami with revoked creds:\n%s", r)
		}
	})
	add("brief", "connects after expiring", func(t *testing.T, w *world) {
		select {
		case <-w.briefClosed:
		case <-time.After(jobTimeout):
			t.Fatal("the server did not close the connection of the credential when it expired")
		}
		if errs := w.briefConn.asyncErrors(); !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, "expired") }) {
			t.Errorf("the live connection ended with %q, want an expiry", errs)
		}
		// The server takes a JWT through the whole second it expires in, so
		// a connection may still get in (to be closed at once) a moment
		// after the live one was closed: poll until it is refused.
		var err error
		testenv.EventuallyWithin(t, jobTimeout, "the expired credential to be refused", func() bool {
			nc, cerr := nats.Connect(w.c.url, nats.UserCredentials(w.creds["brief"]), nats.NoReconnect())
			if cerr == nil {
				nc.Close()
				return false
			}
			err = cerr
			return strings.Contains(strings.ToLower(err.Error()), "authorization violation")
		})
		r := w.session("brief").outpost(t, "whoami")
		if r.code == 0 || !strings.Contains(r.stderr, "refused the credential") {
			t.Errorf("outpost whoami with expired creds:\n%s", r)
		}
	})
	add("forger", "connects with a credential of another operator", func(t *testing.T, w *world) {
		other := foreignAuthority(t)
		cred, err := other.Issue(accounts.Request{Name: "alice", Role: accounts.RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		// The server does not know the account and holds the connection
		// while it looks for it, so nats.go may report its own timeout
		// rather than an authorization violation; the refusal is what counts.
		requireRefused(t, w.c.url, writeCreds(t, cred.Creds))
	})
	add("forger", "connects with a JWT naming alice's account, signed by another deployment's account key", func(t *testing.T, w *world) {
		creds := readFile(t, w.creds["alice"])
		uc := decodeUser(t, creds)
		uc.Tags.Add("pool:b")
		uc.IssuerAccount = uc.Issuer
		w.requireForgeryRefused(t, creds, uc, foreignKey(t, "OUTPOST"))
	})
	add("forger", "connects with a JWT naming the OUTPOST account, signed by another deployment's account key", func(t *testing.T, w *world) {
		// OUTPOST holds JetStream: a user of it could reach every stream.
		creds := readFile(t, w.creds["alice"])
		uc := decodeUser(t, creds)
		uc.IssuerAccount = workAccount(t, w.c.data)
		uc.Permissions = jwt.Permissions{}
		w.requireForgeryRefused(t, creds, uc, foreignKey(t, "OUTPOST"))
	})
	add("forger", "connects with a creds file whose tag was edited", func(t *testing.T, w *world) {
		creds := readFile(t, w.creds["alice"])
		err := requireRefused(t, w.c.url, writeCreds(t, tamperJWT(t, creds, `"pool:local"`, `"pool:b"`)))
		if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			t.Errorf("refused with %v, want an authorization violation", err)
		}
	})
	add("forger", "connects with a creds file whose role was edited", func(t *testing.T, w *world) {
		creds := readFile(t, w.creds["alice"])
		forged := writeCreds(t, tamperJWT(t, creds, `"role:user"`, `"role:admin"`))
		requireRefused(t, w.c.url, forged)
		r := w.session("alice").with(forged).outpost(t, "admin", "ls")
		if r.code == 0 || r.stdout != "" {
			t.Errorf("outpost admin ls with a role edited to admin:\n%s", r)
		}
	})

	// --- The admin issuing what must never be signed.
	for _, bad := range []struct{ args []string }{
		{[]string{"user", "add", "coordinator", "--role", "admin"}},
		{[]string{"user", "add", "sneaky", "--role", "coordinator"}},
		{[]string{"user", "add", "a.b", "--role", "user", "--tag", "local"}},
		{[]string{"user", "add", "*", "--role", "user", "--tag", "local"}},
		{[]string{"user", "add", "dave", "--role", "user", "--tag", "pool:*"}},
		{[]string{"agent", "add", "eve", "--tag", "a.b"}},
		{[]string{"agent", "add", "frank", "--tag", ">"}},
	} {
		add("admin", "issues "+strings.Join(bad.args, " "), func(t *testing.T, w *world) {
			r := w.c.admin.outpost(t, append([]string{"admin"}, bad.args...)...)
			if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "bad_request") {
				t.Errorf("outpost admin %s: want bad_request and no creds file\n%s", strings.Join(bad.args, " "), r)
			}
			w.requireNoNewCreds(t)
			if log := w.c.proc.stderr.String(); strings.Contains(log, `msg="credential issued" name=`+bad.args[2]+" ") {
				t.Errorf("the coordinator logged issuing %s", bad.args[2])
			}
		})
	}
	add("admin", "issues a name that is already taken", func(t *testing.T, w *world) {
		r := w.c.admin.outpost(t, "admin", "user", "add", "bob", "--role", "admin")
		if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "conflict") {
			t.Errorf("outpost admin user add bob (taken):\n%s", r)
		}
		w.requireNoNewCreds(t)
	})
	return cases
}

// conn connects as the named credential, with its private inbox prefix.
func (w *world) conn(t *testing.T, who string) *natsConn {
	t.Helper()
	return dialNATS(t, w.c.url, w.creds[who], "_INBOX_"+who)
}

// session is the CLI with the named credential.
func (w *world) session(who string) session {
	return w.c.admin.with(w.creds[who])
}

// pubDenied publishes m as who: the server must report a permission
// violation for its subject.
func (w *world) pubDenied(t *testing.T, who string, m *nats.Msg) {
	t.Helper()
	nc := w.conn(t, who)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	nc.waitDenied(t, m.Subject)
}

// subDenied subscribes as who: the server must refuse the subscription.
func (w *world) subDenied(t *testing.T, who, subject string) {
	t.Helper()
	nc := w.conn(t, who)
	if _, err := nc.SubscribeSync(subject); err != nil {
		t.Fatal(err)
	}
	nc.waitDenied(t, subject)
}

// reqDenied sends a request as who: the server must refuse its publish.
func (w *world) reqDenied(t *testing.T, who, subject, body string) {
	t.Helper()
	nc := w.conn(t, who)
	nc.requireDenied(t, subject, func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, subject, []byte(body))
		return err
	})
}

// call makes an API request as who, under its own name.
func (w *world) call(t *testing.T, who, verb, body string) apiReply {
	t.Helper()
	return w.conn(t, who).request(t, "outpost.api."+who+"."+verb, []byte(body))
}

func requireAPIError(t *testing.T, r apiReply, code, msg string) {
	t.Helper()
	if r.Error == nil || r.Error.Code != code || !strings.Contains(r.Error.Message, msg) {
		t.Errorf("reply %+v (error %+v); want code %s and a message containing %q", r, r.Error, code, msg)
	}
	if r.Job != nil || r.Jobs != nil {
		t.Errorf("a refusal carries a result: %+v", r)
	}
}

// get reads a job's record as the admin.
func (w *world) get(t *testing.T, id string) jobRecord {
	t.Helper()
	r := w.admin.request(t, "outpost.api.admin.get", []byte(`{"id":"`+id+`"}`))
	if r.Job == nil {
		t.Fatalf("get %s: %+v", id, r.Error)
	}
	return *r.Job
}

func (w *world) requireBobRunning(t *testing.T) {
	t.Helper()
	if rec := w.get(t, w.bobRunning); rec.State != "running" || rec.Attempt != 1 || rec.StopRequested {
		t.Errorf("bob's running job: %+v, want running at attempt 1 and no stop requested", rec)
	}
}

// jobList sums up every job record.
func (w *world) jobList(t *testing.T) string {
	t.Helper()
	r := w.admin.request(t, "outpost.api.admin.list", []byte(`{"limit":1000}`))
	var lines []string
	for _, j := range r.Jobs {
		lines = append(lines, j.ID+" "+j.Owner+" "+j.Tag)
	}
	return strings.Join(lines, "\n")
}

func (w *world) requireNoNewJobs(t *testing.T) {
	t.Helper()
	if now := w.jobList(t); now != w.jobs {
		t.Errorf("the job records changed:\nbefore:\n%s\nnow:\n%s", w.jobs, now)
	}
}

// credential is the public record of a credential, as the admin API
// shows it.
type credential struct {
	Name      string   `json:"name"`
	Role      string   `json:"role"`
	Tags      []string `json:"tags"`
	PublicKey string   `json:"public_key"`
	Account   string   `json:"account"`
}

func (w *world) credRecords(t *testing.T) []credential {
	t.Helper()
	m, err := w.admin.Request("outpost.api.admin.creds", []byte(`{}`), 10*time.Second)
	if err != nil {
		t.Fatalf("creds: %v", err)
	}
	var r struct {
		Credentials []credential `json:"credentials"`
		Error       *apiError    `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil || r.Error != nil {
		t.Fatalf("creds: %v %+v\n%s", err, r.Error, m.Data)
	}
	return r.Credentials
}

// record is the named credential's record.
func (w *world) record(t *testing.T, name string) credential {
	t.Helper()
	for _, c := range w.credRecords(t) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no credential %s", name)
	return credential{}
}

// credList sums up every credential record: what was signed, not when it
// was last seen.
func (w *world) credList(t *testing.T) string {
	t.Helper()
	var lines []string
	for _, c := range w.credRecords(t) {
		lines = append(lines, fmt.Sprintf("%s %s %v %s %s", c.Name, c.Role, c.Tags, c.PublicKey, c.Account))
	}
	return strings.Join(lines, "\n")
}

func (w *world) requireNoNewCreds(t *testing.T, names ...string) {
	t.Helper()
	now := w.credList(t)
	if now != w.credentials {
		t.Errorf("the credential records changed:\nbefore:\n%s\nnow:\n%s", w.credentials, now)
	}
	for _, n := range names {
		if strings.Contains("\n"+now, "\n"+n+" ") {
			t.Errorf("a credential named %s was issued", n)
		}
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// stored counts the messages a stream holds on subject.
func (w *world) stored(t *testing.T, stream, subject string) uint64 {
	t.Helper()
	s, err := w.root.js.Stream(ctxT(t), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctxT(t), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	return info.State.Subjects[subject]
}

func (w *world) requireStream(t *testing.T, name string) jetstream.StreamConfig {
	t.Helper()
	return requireStream(t, w.root, name).Config
}

func (w *world) requireConsumer(t *testing.T, stream, name string) jetstream.ConsumerConfig {
	t.Helper()
	return requireConsumer(t, w.root, stream, name).Config
}

// requireStream is the info of a stream that must exist.
func requireStream(t testing.TB, root *natsConn, name string) *jetstream.StreamInfo {
	t.Helper()
	s, err := root.js.Stream(ctxT(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo()
}

// requireConsumer is the info of a consumer that must exist.
func requireConsumer(t testing.TB, root *natsConn, stream, name string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := root.js.Consumer(ctxT(t), stream, name)
	if err != nil {
		t.Fatalf("consumer %s of %s: %v", name, stream, err)
	}
	return c.CachedInfo()
}

// consumers are the configurations of every consumer of stream.
func consumers(t testing.TB, root *natsConn, stream string) []jetstream.ConsumerConfig {
	t.Helper()
	st, err := root.js.Stream(ctxT(t), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	var out []jetstream.ConsumerConfig
	list := st.ListConsumers(ctxT(t))
	for info := range list.Info() {
		out = append(out, info.Config)
	}
	if err := list.Err(); err != nil {
		t.Fatalf("consumers of %s: %v", stream, err)
	}
	return out
}

// consumers names every consumer of stream.
func (w *world) consumers(t *testing.T, stream string) []string {
	t.Helper()
	var names []string
	for _, cfg := range consumers(t, w.root, stream) {
		names = append(names, cfg.Name)
	}
	return names
}

func (w *world) requireNoConsumer(t *testing.T, stream, name string) {
	t.Helper()
	if slices.Contains(w.consumers(t, stream), name) {
		t.Errorf("stream %s has a consumer named %s", stream, name)
	}
}

// requireNoConsumerWith checks that no consumer of stream has the filter
// an attack asked for, or, if deliver is given, delivers there.
func (w *world) requireNoConsumerWith(t *testing.T, stream, filter, deliver string) {
	t.Helper()
	for _, cfg := range consumers(t, w.root, stream) {
		if cfg.FilterSubject == filter || slices.Contains(cfg.FilterSubjects, filter) || (deliver != "" && cfg.DeliverSubject == deliver) {
			t.Errorf("stream %s has consumer %s filtering %s, delivering to %q", stream, cfg.Name, filter, cfg.DeliverSubject)
		}
	}
}

// readerBody is the body of a raw consumer-create request for a reader's
// pinned consumer, pull unless deliver is given.
func readerBody(name, filter, deliver string) string {
	cfg := map[string]any{"name": name, "filter_subject": filter, "ack_policy": "none", "deliver_policy": "all", "inactive_threshold": int64(time.Minute)}
	if deliver != "" {
		cfg["deliver_subject"] = deliver
	}
	b, _ := json.Marshal(map[string]any{"stream_name": "OUTPOST_EVENTS", "config": cfg})
	return string(b)
}

// logLine is a log message of one line as an agent publishes it.
func logLine(subject, line string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set("Outpost-Stream", "stdout")
	m.Header.Set("Outpost-Attempt", "1")
	m.Header.Set("Outpost-Seq", "1")
	m.Data = []byte(line)
	return m
}

// askRead asks the coordinator, as name on nc, for a reader consumer
// (body is the read request), and gives it back when the test ends.
func askRead(t testing.TB, nc *natsConn, name, body string) reader {
	t.Helper()
	r := nc.request(t, "outpost.api."+name+".read", []byte(body))
	if r.Reader == nil {
		t.Fatalf("read %s as %s: %+v", body, name, r.Error)
	}
	t.Cleanup(func() {
		if r := nc.request(t, "outpost.api."+name+".release", []byte(`{"consumer":"`+r.Reader.Consumer+`"}`)); r.Error != nil {
			t.Errorf("release %s: %+v", r.Reader.Consumer, r.Error)
		}
	})
	return *r.Reader
}

// read is askRead on one of who's slots, held until the test ends.
func (w *world) read(t *testing.T, nc *natsConn, who, body string) reader {
	t.Helper()
	w.holdSlot(t, who)
	return askRead(t, nc, who, body)
}

// holdSlot takes one of who's reader slots until the test ends.
func (w *world) holdSlot(t *testing.T, who string) {
	t.Helper()
	w.slots[who] <- struct{}{}
	t.Cleanup(func() { <-w.slots[who] })
}

// pullHere pulls up to batch messages of rd onto nc's own inbox without
// waiting, and returns them and the status that ended the pull, if any.
func pullHere(t testing.TB, nc *natsConn, rd reader, batch int) ([]*nats.Msg, string) {
	t.Helper()
	sub, err := nc.SubscribeSync(nc.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req := fmt.Sprintf(`{"batch":%d,"no_wait":true}`, batch)
	if err := nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+rd.Stream+"."+rd.Consumer, sub.Subject, []byte(req)); err != nil {
		t.Fatal(err)
	}
	var msgs []*nats.Msg
	for len(msgs) < batch {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("pull from %s: %v (async errors %q)", rd.Consumer, err, nc.asyncErrors())
		}
		if status := m.Header.Get("Status"); status != "" {
			return msgs, status
		}
		msgs = append(msgs, m)
	}
	return msgs, ""
}

// pullInto pulls all of rd's messages with reply as the pull request's
// reply subject, which the server checks against nothing, and waits until
// the consumer has served that pull, and returns how many messages it sent
// to reply. The reply is read in the puller's account: if nothing there
// hears it, the consumer passes the pull over and sends nothing; else it
// sends every message it holds by then, and then its closing status. A pull of the puller's
// own shows which, as the server serves one consumer's pulls in order.
func pullInto(t testing.TB, root, nc *natsConn, rd reader, reply string) int {
	t.Helper()
	if err := nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+rd.Stream+"."+rd.Consumer, reply, []byte(`{"batch":1000,"no_wait":true}`)); err != nil {
		t.Fatal(err)
	}
	kept := 0
	testenv.EventuallyWithin(t, jobTimeout, "the pull aimed at "+reply+" to be served", func() bool {
		msgs, status := pullHere(t, nc, rd, 1)
		kept = len(msgs)
		return kept > 0 || status == "404" // 408: the first pull is still being served
	})
	if errs := nc.asyncErrors(); len(errs) > 0 {
		t.Fatalf("the pull itself was refused: %q", errs)
	}
	sent := int(requireConsumer(t, root, rd.Stream, rd.Consumer).Delivered.Consumer) - kept
	if sent != 0 && sent < rd.Pending {
		t.Fatalf("the consumer sent %d of its %d messages to %s", sent, rd.Pending, reply)
	}
	return sent
}

// redirectReplay reads job as who and aims the replay at target: nothing
// in OUTPOST hears it, neither the coordinator's API nor an agent's
// control subscription. It returns how many messages were sent to target.
func (w *world) redirectReplay(t *testing.T, who, job, target string) int {
	t.Helper()
	nc := w.conn(t, who)
	rd := w.read(t, nc, who, `{"job":"`+job+`"}`)
	if rd.Pending == 0 {
		t.Fatalf("%s's reader over job %s holds nothing to redirect", who, job)
	}
	sent := pullInto(t, w.root, nc, rd, target)
	w.requireUnheard(t, job)
	return sent
}

// requireUnheard checks that no event of jobs reached a listener in
// OUTPOST: the coordinator logs what lands on its API subjects, and the
// local agent what lands on its control subjects, as it drops them.
func (w *world) requireUnheard(t *testing.T, jobs ...string) {
	t.Helper()
	for _, line := range strings.Split(w.c.proc.stderr.String(), "\n") {
		if !strings.Contains(line, "api request dropped") && !strings.Contains(line, "ignored control message") {
			continue
		}
		for _, job := range jobs {
			if strings.Contains(line, "."+job+".") {
				t.Errorf("a redirected event reached a listener: %s", line)
			}
		}
	}
}

// requireJSError checks that m is a JetStream API response with the error
// errCode.
func requireJSError(t testing.TB, m *nats.Msg, errCode int) {
	t.Helper()
	var r struct {
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil || r.Error == nil || r.Error.ErrCode != errCode {
		t.Errorf("JetStream answered %s, want error %d", m.Data, errCode)
	}
}

// waitLog waits for the coordinator (or its local agent) to log line.
func (w *world) waitLog(t *testing.T, line string) {
	t.Helper()
	testenv.EventuallyWithin(t, jobTimeout, "the coordinator to log "+line, func() bool {
		return strings.Contains(w.c.proc.stderr.String(), line)
	})
}

// requireRefused checks that the server refuses creds at connect, and
// returns the error.
func requireRefused(t *testing.T, url, creds string) error {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserCredentials(creds), nats.NoReconnect())
	if err == nil {
		nc.Close()
		t.Fatalf("%s got in", filepath.Base(creds))
	}
	return err
}

// requireForgeryRefused signs uc with key, puts it in creds in place of
// its JWT, and checks that the server refuses it as unauthorised.
func (w *world) requireForgeryRefused(t *testing.T, creds []byte, uc *jwt.UserClaims, key nkeys.KeyPair) {
	t.Helper()
	tok, err := uc.Encode(key)
	if err != nil {
		t.Fatal(err)
	}
	err = requireRefused(t, w.c.url, writeCreds(t, withJWT(t, creds, tok)))
	if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Errorf("refused with %v, want an authorization violation", err)
	}
}

// foreignAuthority is another deployment: an operator and accounts of its
// own, which this server does not trust.
func foreignAuthority(t *testing.T) *accounts.Authority {
	t.Helper()
	a, _, err := accounts.Init(filepath.Join(t.TempDir(), "foreign"))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// foreignKey is the seed of the named account (SYS or OUTPOST) of another
// deployment.
func foreignKey(t *testing.T, account string) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.FromSeed(readFile(t, filepath.Join(foreignAuthority(t).Dir(), "keys", account+".nk")))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeCreds(t *testing.T, creds []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "forged.creds")
	if err := os.WriteFile(p, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func decodeUser(t *testing.T, creds []byte) *jwt.UserClaims {
	t.Helper()
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	return uc
}

// withJWT is creds with its JWT replaced by tok; the seed stays.
func withJWT(t *testing.T, creds []byte, tok string) []byte {
	t.Helper()
	old, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.Replace(string(creds), old, tok, 1))
}

// tamperJWT edits the JWT's payload, replacing from with to, and
// re-encodes it with the original signature, which no longer matches.
func tamperJWT(t *testing.T, creds []byte, from, to string) []byte {
	t.Helper()
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || !strings.Contains(string(payload), from) {
		t.Fatalf("JWT payload %s (%v) lacks %s", payload, err, from)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), from, to, 1)))
	return withJWT(t, creds, strings.Join(parts, "."))
}

// workAccount is the public key of the OUTPOST account in a data directory.
func workAccount(t *testing.T, data string) string {
	t.Helper()
	a, err := accounts.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	return a.WorkPublicKey()
}
