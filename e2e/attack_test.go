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
)

// attackCase is one attack: who makes it (the name of a credential the
// admin issued), what it tries, and the check that the NATS server or the
// coordinator refused it and that its effect did not happen.
type attackCase struct {
	who, what string
	run       func(t *testing.T, w *world)
}

// TestAttackMatrix makes each attack of attackCases, by the role it suits,
// against one coordinator, and checks each refusal concretely:
// the permission violation the server reports for that subject, the API
// error code, or the refused connection; and, where there is one, that the
// forbidden effect did not happen (nothing stored, submitted, stopped,
// issued or deleted). Credentials come from 'outpost admin ... add', except
// for the forged ones.
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
	w := &world{c: c, creds: map[string]string{}}
	w.creds["agent-b"] = c.issue(t, "agent", "agent-b", "--tag", "b")
	w.creds["alice"] = c.issue(t, "user", "alice", "--tag", "local")
	w.creds["bob"] = c.issue(t, "user", "bob", "--tag", "local")
	w.creds["watcher"] = c.issue(t, "observer", "watcher", "--tag", "b")
	w.creds["mallory"] = c.issue(t, "user", "mallory", "--tag", "local")
	w.root = dialNATS(t, c.url, c.creds("coordinator"), "_INBOX_coordinator")
	w.admin = dialNATS(t, c.url, c.creds("admin"), "_INBOX_admin")

	dir := t.TempDir()
	w.gate, w.mark = filepath.Join(dir, "gate"), filepath.Join(dir, "forged-submit-ran")
	bob := c.as("bob").with(w.creds["bob"])
	w.bobRunning = bob.submit(t, "--tag", "local", "--env", "GATE="+w.gate, "--",
		"sh", "-c", `while [ ! -e "$GATE" ]; do sleep 0.02; done; echo bob done`)
	w.bobDone = bob.submit(t, "--tag", "local", "--", "echo", "bob's secret")
	// Alice's job prints what an attacker would like a listener to act on:
	// a submit spec and a stop request for bob's job.
	submit := fmt.Sprintf(`{"tag":"local","command":["touch",%q]}`, w.mark)
	stop := fmt.Sprintf(`{"action":"stop","job":%q,"force":true}`, w.bobRunning)
	alice := c.as("alice").with(w.creds["alice"])
	w.aliceJob = alice.submit(t, "--tag", "local", "--", "sh", "-c", `echo "$1"; echo "$2"`, "sh", submit, stop)
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
	add("agent-b", "acks another tag's job", func(t *testing.T, w *world) {
		w.pubDenied(t, "agent-b", nats.NewMsg("$JS.ACK.OUTPOST_JOBS.agents-local.1.1.1.1.0.0"))
	})
	add("agent-b", "publishes a log line of another tag's job", func(t *testing.T, w *world) {
		subj := "outpost.ev.local.bob." + w.bobRunning + ".log"
		m := nats.NewMsg(subj)
		m.Header.Set("Outpost-Stream", "stdout")
		m.Header.Set("Outpost-Attempt", "1")
		m.Header.Set("Outpost-Seq", "1")
		m.Data = []byte("forged\n")
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
	add("alice", "replays another user's job through a reader consumer", func(t *testing.T, w *world) {
		f := "outpost.ev.*.bob." + w.bobDone + ".>"
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_1."+f, readerBody("r_alice_1", f, ""))
		w.requireNoConsumer(t, "OUTPOST_EVENTS", "r_alice_1")
		if r := w.session("alice").outpost(t, "logs", w.bobDone); r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "no events visible to alice") {
			t.Errorf("outpost logs of bob's job as alice:\n%s", r)
		}
	})
	add("alice", "names her own scope in the subject and another's in the body", func(t *testing.T, w *world) {
		nc := w.conn(t, "alice")
		resp := jsRequest(t, nc, "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_2.outpost.ev.*.alice."+w.bobDone+".>",
			readerBody("r_alice_2", "outpost.ev.*.bob."+w.bobDone+".>", ""))
		if resp.Error == nil || resp.Error.ErrCode != 10131 {
			t.Errorf("consumer create with a filter outside the subject's: %+v, want error 10131", resp)
		}
		w.requireNoConsumer(t, "OUTPOST_EVENTS", "r_alice_2")
	})
	add("alice", "names another reader's consumer as the durable", func(t *testing.T, w *world) {
		nc := w.conn(t, "alice")
		f := "outpost.ev.*.alice." + w.aliceJob + ".>"
		body := strings.Replace(readerBody("r_alice_3", f, ""), `"name":"r_alice_3"`, `"durable_name":"r_bob_1"`, 1)
		resp := jsRequest(t, nc, "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_3."+f, body)
		if resp.Error == nil || resp.Error.ErrCode != 10017 {
			t.Errorf("consumer create with durable r_bob_1 under r_alice_3's subject: %+v, want error 10017", resp)
		}
		w.requireNoConsumer(t, "OUTPOST_EVENTS", "r_bob_1")
		w.requireNoConsumer(t, "OUTPOST_EVENTS", "r_alice_3")
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
			// Her permission covers it, but no coordinator listens there.
			nc := w.conn(t, "alice")
			_, err := nc.Request(subj, []byte(`{"tag":"local","command":["touch","`+w.mark+`"]}`), 10*time.Second)
			if !errors.Is(err, nats.ErrNoResponders) {
				t.Errorf("request on %s: %v, want no responders", subj, err)
			}
			w.requireNoNewJobs(t)
		})
	}
	for _, name := range []string{"*", "r_*_1", "r_bob_1", "r_alice_1.x"} {
		add("alice", "creates a consumer named "+name, func(t *testing.T, w *world) {
			f := "outpost.ev.*.alice.>"
			w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS."+name+"."+f, readerBody(name, f, ""))
			w.requireNoConsumer(t, "OUTPOST_EVENTS", name)
		})
	}
	add("alice", "smuggles a full wildcard into her filter", func(t *testing.T, w *world) {
		// Her permission's '*' matches a literal '>' token, so the request
		// gets through; the server refuses the filter itself.
		nc := w.conn(t, "alice")
		f := "outpost.ev.>.alice.>"
		if resp := jsRequest(t, nc, "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_3."+f, readerBody("r_alice_3", f, "")); resp.Error == nil {
			t.Errorf("consumer create with filter %s succeeded", f)
		}
		w.requireNoConsumer(t, "OUTPOST_EVENTS", "r_alice_3")
	})
	add("alice", "adds another user's filter in filter_subjects", func(t *testing.T, w *world) {
		nc := w.conn(t, "alice")
		f := "outpost.ev.*.alice." + w.aliceJob + ".>"
		body := strings.Replace(readerBody("r_alice_3", f, ""), `"filter_subject":`, `"filter_subjects":["outpost.ev.*.bob.>"],"filter_subject":`, 1)
		if resp := jsRequest(t, nc, "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_alice_3."+f, body); resp.Error == nil {
			t.Errorf("consumer create with bob's filter in filter_subjects succeeded")
		}
		w.requireNoConsumer(t, "OUTPOST_EVENTS", "r_alice_3")
	})
	add("alice", "creates a consumer through the legacy subjects", func(t *testing.T, w *world) {
		f := "outpost.ev.*.bob.>"
		body := readerBody("r_alice_1", f, "")
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS", body)
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.DURABLE.CREATE.OUTPOST_EVENTS.r_alice_1", strings.Replace(body, `"name"`, `"durable_name"`, 1))
	})
	add("alice", "pulls from another reader's consumer", func(t *testing.T, w *world) {
		w.reqDenied(t, "alice", "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS.r_bob_1", `{"batch":1,"expires":1000000000}`)
	})
	add("alice", "follows another user's events live", func(t *testing.T, w *world) {
		w.subDenied(t, "alice", "outpost.ev.local.bob.>")
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
		w.reqDenied(t, "watcher", "outpost.api.watcher.submit", `{"tag":"b","command":["true"]}`)
		w.requireNoNewJobs(t)
	})
	add("watcher", "stops a job of its tag", func(t *testing.T, w *world) {
		w.reqDenied(t, "watcher", "outpost.api.watcher.stop", `{"id":"`+w.bJob+`","force":true}`)
		if rec := w.get(t, w.bJob); rec.State != "queued" || rec.StopRequested {
			t.Errorf("the job of tag b after the observer's stop: %+v", rec)
		}
	})
	add("watcher", "replays a tag it may not read", func(t *testing.T, w *world) {
		f := "outpost.ev.local.>"
		w.reqDenied(t, "watcher", "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.r_watcher_1."+f, readerBody("r_watcher_1", f, ""))
		if r := w.session("watcher").outpost(t, "logs", "--tag", "local", w.bobDone); r.code == 0 || r.stdout != "" {
			t.Errorf("outpost logs of a job of tag local as the observer of b:\n%s", r)
		}
	})
	add("watcher", "follows a tag it may not read", func(t *testing.T, w *world) {
		w.subDenied(t, "watcher", "outpost.ev.local.>")
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
	// (NATS-NOTES point 5): the server delivers them, the listeners ignore
	// them. Each case has a slot and a filter of its own, so the ignored
	// deliveries it waits for in the logs are its own.
	add("alice", "redirects her replay into the API with a pull request's reply subject", func(t *testing.T, w *world) {
		f := "outpost.ev.*.alice." + w.aliceJob + ".log"
		w.redirect(t, "alice", "r_alice_1", f, "outpost.api.alice.submit", false)
		w.waitLog(t, `msg="api request dropped" subject=outpost.ev.local.alice.`+w.aliceJob+`.log`)
		w.requireNoNewJobs(t)
	})
	add("alice", "redirects her replay onto another user's stop with a push consumer", func(t *testing.T, w *world) {
		f := "outpost.ev.*.alice." + w.aliceJob + ".status"
		w.redirect(t, "alice", "r_alice_2", f, "outpost.api.bob.stop", true)
		w.waitLog(t, `msg="api request dropped" subject=outpost.ev.local.alice.`+w.aliceJob+`.status`)
		w.requireBobRunning(t)
	})
	add("alice", "redirects her replay onto a control subject with a pull request's reply subject", func(t *testing.T, w *world) {
		f := "outpost.ev.*.alice." + w.aliceJob + ".log"
		w.redirect(t, "alice", "r_alice_3", f, "outpost.ctl.local."+w.bobRunning, false)
		w.waitLog(t, `msg="ignored control message" agent=local-agent subject=outpost.ev.local.alice.`+w.aliceJob+`.log`)
		w.requireBobRunning(t)
	})
	add("alice", "redirects her replay onto a control subject with a push consumer", func(t *testing.T, w *world) {
		f := "outpost.ev.*.alice." + w.aliceJob + ".status"
		w.redirect(t, "alice", "r_alice_4", f, "outpost.ctl.local."+w.bobRunning, true)
		w.waitLog(t, `msg="ignored control message" agent=local-agent subject=outpost.ev.local.alice.`+w.aliceJob+`.status`)
		w.requireBobRunning(t)
	})
	add("watcher", "redirects its replay into the admin's API", func(t *testing.T, w *world) {
		f := "outpost.ev.b.>"
		w.redirect(t, "watcher", "r_watcher_2", f, "outpost.api.admin.submit", false)
		w.waitLog(t, `msg="api request dropped" subject=outpost.ev.b.admin.`+w.bJob+`.status`)
		w.requireNoNewJobs(t)
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
	add("forger", "connects with a JWT naming this account, signed by another deployment's role key", func(t *testing.T, w *world) {
		other := foreignAuthority(t)
		uc := decodeUser(t, readFile(t, w.creds["alice"]))
		uc.Tags.Add("pool:b")
		uc.IssuerAccount = workAccount(t, w.c.data)
		tok, err := uc.Encode(roleKeyOf(t, other.Dir(), accounts.RoleUser))
		if err != nil {
			t.Fatal(err)
		}
		err = requireRefused(t, w.c.url, writeCreds(t, withJWT(t, readFile(t, w.creds["alice"]), tok)))
		if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			t.Errorf("refused with %v, want an authorization violation", err)
		}
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

// credList sums up every credential record: what was signed, not when it
// was last seen.
func (w *world) credList(t *testing.T) string {
	t.Helper()
	r := w.c.admin.mustOutpost(t, "admin", "ls", "-o", "json")
	var creds []struct {
		Name      string   `json:"name"`
		Role      string   `json:"role"`
		Tags      []string `json:"tags"`
		PublicKey string   `json:"public_key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &creds); err != nil {
		t.Fatalf("admin ls -o json: %v\n%s", err, r.stdout)
	}
	var lines []string
	for _, c := range creds {
		lines = append(lines, fmt.Sprintf("%s %s %v %s", c.Name, c.Role, c.Tags, c.PublicKey))
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

func ctxT(t *testing.T) context.Context {
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
	s, err := w.root.js.Stream(ctxT(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

func (w *world) requireConsumer(t *testing.T, stream, name string) jetstream.ConsumerConfig {
	t.Helper()
	c, err := w.root.js.Consumer(ctxT(t), stream, name)
	if err != nil {
		t.Fatalf("consumer %s of %s: %v", name, stream, err)
	}
	return c.CachedInfo().Config
}

func (w *world) requireNoConsumer(t *testing.T, stream, name string) {
	t.Helper()
	st, err := w.root.js.Stream(ctxT(t), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	names := st.ConsumerNames(ctxT(t))
	for n := range names.Name() {
		if n == name {
			t.Errorf("stream %s has a consumer named %s", stream, name)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatalf("consumers of %s: %v", stream, err)
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

// jsResponse is the part of a JetStream API response the attacks read.
type jsResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

func jsRequest(t *testing.T, nc *natsConn, subject, body string) jsResponse {
	t.Helper()
	m, err := nc.Request(subject, []byte(body), 10*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v (async errors: %q)", subject, err, nc.asyncErrors())
	}
	var r jsResponse
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("response to %s: %v\n%s", subject, err, m.Data)
	}
	return r
}

// redirect makes who's pinned reader consumer, filtered inside its scope,
// deliver what it stores to target: as the reply subject of a pull request,
// or as a push consumer's deliver subject. Both are the reader's to make;
// the server checks neither subject.
func (w *world) redirect(t *testing.T, who, consumer, filter, target string, push bool) {
	t.Helper()
	nc := w.conn(t, who)
	deliver := ""
	if push {
		deliver = target
	}
	if push {
		// A push consumer delivers only while someone holds a literal
		// subscription on its deliver subject; Outpost's listeners
		// subscribe with wildcards. Any credential that may subscribe there
		// literally (an agent of the tag, for a control subject) makes it
		// deliver, to every listener; the coordinator's credential stands
		// in for it here.
		sub, err := w.root.SubscribeSync(target)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		if err := w.root.Flush(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			m, err := sub.NextMsg(jobTimeout)
			if err != nil {
				t.Fatalf("the push consumer delivered nothing to %s: %v", target, err)
			}
			if !strings.HasPrefix(m.Subject, "outpost.ev.") {
				t.Errorf("a redirected message arrived as %s, want its stored subject", m.Subject)
			}
		}()
	}
	create := "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS." + consumer + "." + filter
	if r := jsRequest(t, nc, create, readerBody(consumer, filter, deliver)); r.Error != nil {
		t.Fatalf("create %s: %+v", consumer, r.Error)
	}
	t.Cleanup(func() {
		_, _ = nc.Request("$JS.API.CONSUMER.DELETE.OUTPOST_EVENTS."+consumer, nil, 5*time.Second)
	})
	if !push {
		next := "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_EVENTS." + consumer
		if err := nc.PublishRequest(next, target, []byte(`{"batch":100,"no_wait":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if errs := nc.asyncErrors(); len(errs) > 0 {
		t.Fatalf("the redirect itself was refused: %q", errs)
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

// foreignAuthority is another deployment: an operator, accounts and role
// keys of its own.
func foreignAuthority(t *testing.T) *accounts.Authority {
	t.Helper()
	a, _, err := accounts.Init(filepath.Join(t.TempDir(), "foreign"))
	if err != nil {
		t.Fatal(err)
	}
	return a
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

// roleKeyOf is a role's signing key in a data directory.
func roleKeyOf(t *testing.T, dir string, r accounts.Role) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.FromSeed(readFile(t, filepath.Join(dir, "keys", "role-"+string(r)+".nk")))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}
