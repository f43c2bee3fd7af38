package e2e

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/internal/testenv"
)

// TestRedirectIntoJetStreamAPIRefused checks the part of NATS-NOTES point
// 5 that the listeners' own checks cannot cover. Whoever may make a
// request picks its reply subject, and the server itself then publishes
// there: a pull's messages and closing status (404 No Messages: headers,
// no body), a no-responders status, the coordinator's answer. When every
// credential shared the account that holds JetStream, such a reply aimed
// at $JS.API.* was a JetStream API request and one aimed at
// $KV.<bucket>.<key> a write to that bucket, made with that account's
// authority: an agent could delete the coordinator's consumer, an observer
// the audit trail, a user every job's output, a job record or the admin's
// credential record.
//
// Each credential now has an account of its own, without JetStream, that
// imports only its role's reach, and a reply subject is read in the
// requester's account, where none of those targets exists. Each attack
// here first shows that the server did serve the request, with its replies
// sent to the target, and then that the target is intact.
func TestRedirectIntoJetStreamAPIRefused(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{})
	agentCreds := c.issue(t, "agent", "agent-x", "--tag", "x")
	aliceCreds := c.issue(t, "user", "alice", "--tag", "local")
	watcherCreds := c.issue(t, "observer", "watcher", "--tag", "local")
	root := dialNATS(t, c.url, c.creds("coordinator"), "_INBOX_coordinator")
	victim := c.admin.submit(t, "--tag", "local", "--", "echo", "the admin's job")
	mine := c.admin.with(aliceCreds).submit(t, "--tag", "local", "--", "echo", "alice's job")
	c.admin.waitState(t, victim)
	c.admin.waitState(t, mine)

	agent := dialNATS(t, c.url, agentCreds, "_INBOX_agent-x")
	alice := dialNATS(t, c.url, aliceCreds, "_INBOX_alice")
	watcher := dialNATS(t, c.url, watcherCreds, "_INBOX_watcher")
	admin := dialNATS(t, c.url, c.creds("admin"), "_INBOX_admin")
	jobsOfX := reader{Stream: "OUTPOST_JOBS", Consumer: "agents-x"}

	t.Run("an agent's empty pull replied to a consumer delete", func(t *testing.T) {
		before := requireConsumer(t, root, "OUTPOST_EVENTS", "coordinator")
		pullInto(t, root, agent, jobsOfX, "$JS.API.CONSUMER.DELETE.OUTPOST_EVENTS.coordinator")
		if after := requireConsumer(t, root, "OUTPOST_EVENTS", "coordinator"); !after.Created.Equal(before.Created) {
			t.Errorf("the coordinator's consumer was made again at %s", after.Created)
		}
	})

	t.Run("an observer's replay of the audit trail replied to a stream delete", func(t *testing.T) {
		before := requireStream(t, root, "OUTPOST_AUDIT")
		rd := askRead(t, watcher, "watcher", `{"audit":true}`)
		if rd.Pending == 0 {
			t.Fatal("the audit trail is empty")
		}
		pullInto(t, root, watcher, rd, "$JS.API.STREAM.DELETE.OUTPOST_AUDIT")
		requireKept(t, before, requireStream(t, root, "OUTPOST_AUDIT"))
	})

	t.Run("a user's replay replied to a stream purge", func(t *testing.T) {
		before := requireStream(t, root, "OUTPOST_EVENTS")
		pullInto(t, root, alice, askRead(t, alice, "alice", `{"job":"`+mine+`"}`), "$JS.API.STREAM.PURGE.OUTPOST_EVENTS")
		requireKept(t, before, requireStream(t, root, "OUTPOST_EVENTS"))
	})

	t.Run("a user's replay replied to another's job record", func(t *testing.T) {
		before := kvEntry(t, root, "outpost_jobs", victim)
		pullInto(t, root, alice, askRead(t, alice, "alice", `{"job":"`+mine+`"}`), "$KV.outpost_jobs."+victim)
		requireSameEntry(t, before, kvEntry(t, root, "outpost_jobs", victim))
	})

	t.Run("a user's consumer info request replied to the admin's credential record", func(t *testing.T) {
		// She may ask for her own consumers' info. Her account imports no
		// such thing: the server answers for her account, which has no
		// JetStream, and sends that answer to the reply subject.
		before := kvEntry(t, root, "outpost_creds", "admin")
		info := "$JS.API.CONSUMER.INFO.OUTPOST_EVENTS." + askRead(t, alice, "alice", `{"job":"`+mine+`"}`).Consumer
		if err := alice.PublishRequest(info, "$KV.outpost_creds.admin", nil); err != nil {
			t.Fatal(err)
		}
		// The same request with her own inbox is answered after it.
		m, err := alice.Request(info, nil, 10*time.Second)
		if err != nil {
			t.Fatalf("consumer info: %v (async errors %q)", err, alice.asyncErrors())
		}
		requireJSError(t, m, 10039)
		requireSameEntry(t, before, kvEntry(t, root, "outpost_creds", "admin"))
	})

	for _, aim := range []struct{ what, target string }{
		{"the admin's credential record", "$KV.outpost_creds.admin"},
		{"another's job record", "$KV.outpost_jobs." + victim},
		{"a stream delete", "$JS.API.STREAM.DELETE.OUTPOST_EVENTS"},
	} {
		target := aim.target
		t.Run("the coordinator's answer to a user replied to "+aim.what, func(t *testing.T) {
			creds, job := kvEntry(t, root, "outpost_creds", "admin"), kvEntry(t, root, "outpost_jobs", victim)
			events := requireStream(t, root, "OUTPOST_EVENTS")
			if err := alice.PublishRequest("outpost.api.alice.read", target, []byte(`{"job":"`+mine+`"}`)); err != nil {
				t.Fatal(err)
			}
			// The coordinator answers once it has made her consumer.
			var made string
			testenv.EventuallyWithin(t, jobTimeout, "the coordinator to make alice's reader", func() bool {
				for _, cfg := range consumers(t, root, "OUTPOST_EVENTS") {
					if cfg.Name == "r_alice_1" {
						made = cfg.Name
					}
				}
				return made != ""
			})
			if r := alice.request(t, "outpost.api.alice.release", []byte(`{"consumer":"`+made+`"}`)); r.Error != nil {
				t.Errorf("release %s: %+v", made, r.Error)
			}
			requireSameEntry(t, creds, kvEntry(t, root, "outpost_creds", "admin"))
			requireSameEntry(t, job, kvEntry(t, root, "outpost_jobs", victim))
			requireKept(t, events, requireStream(t, root, "OUTPOST_EVENTS"))
		})
	}

	t.Run("the admin's replay replied to a stream delete", func(t *testing.T) {
		// The admin reaches further than anyone, and its account holds no
		// JetStream either.
		before := requireStream(t, root, "OUTPOST_JOBS")
		pullInto(t, root, admin, askRead(t, admin, "admin", `{"job":"`+victim+`"}`), "$JS.API.STREAM.DELETE.OUTPOST_JOBS")
		if after := requireStream(t, root, "OUTPOST_JOBS"); !after.Created.Equal(before.Created) {
			t.Errorf("OUTPOST_JOBS was made again at %s", after.Created)
		}
	})

	t.Run("an agent's job delivery replied to a stream delete", func(t *testing.T) {
		// A delivered job carries its ack subject as its reply: whatever
		// answers at the target answers there, in the agent's account.
		queued := c.admin.submit(t, "--tag", "x", "--", "true")
		before := requireStream(t, root, "OUTPOST_JOBS")
		if err := agent.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-x", "$JS.API.STREAM.DELETE.OUTPOST_JOBS", []byte(`{"batch":1,"no_wait":true}`)); err != nil {
			t.Fatal(err)
		}
		testenv.EventuallyWithin(t, jobTimeout, "the job of tag x to be delivered", func() bool {
			return requireConsumer(t, root, "OUTPOST_JOBS", "agents-x").NumAckPending == 1
		})
		if after := requireStream(t, root, "OUTPOST_JOBS"); !after.Created.Equal(before.Created) {
			t.Errorf("OUTPOST_JOBS was made again at %s", after.Created)
		}
		s, err := root.js.Stream(ctxT(t), "OUTPOST_JOBS")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetLastMsgForSubject(ctxT(t), "outpost.jobs.x."+queued); err != nil {
			t.Errorf("the delivered job is gone from the queue: %v", err)
		}
		if rec := c.admin.status(t, queued); rec.State != "queued" {
			t.Errorf("the delivered job is %s, want queued", rec.State)
		}
	})

	t.Run("no credential makes a push consumer", func(t *testing.T) {
		// A push consumer's deliver subject is published on in OUTPOST,
		// with no reply to confine; no credential may make one.
		for _, try := range []struct {
			who    string
			nc     *natsConn
			stream string
			name   string
		}{
			{"agent-x", agent, "OUTPOST_JOBS", "agents-x"},
			{"alice", alice, "OUTPOST_EVENTS", "r_alice_1"},
			{"watcher", watcher, "OUTPOST_AUDIT", "r_watcher_1"},
			{"admin", admin, "OUTPOST_AUDIT", "r_admin_1"},
		} {
			cfg := jetstream.ConsumerConfig{Name: try.name, DeliverSubject: "$JS.API.STREAM.DELETE." + try.stream, AckPolicy: jetstream.AckNonePolicy}
			try.nc.requireDenied(t, "$JS.API.CONSUMER.CREATE."+try.stream+"."+try.name, func(ctx context.Context) error {
				_, err := try.nc.js.CreateConsumer(ctx, try.stream, cfg)
				return err
			})
		}
		// Nor does the coordinator make one for a reader.
		r := alice.request(t, "outpost.api.alice.read", []byte(`{"job":"`+mine+`","deliver_subject":"$JS.API.STREAM.DELETE.OUTPOST_EVENTS"}`))
		if r.Error == nil || r.Error.Code != "bad_request" {
			t.Errorf("a read naming a deliver subject: %+v, want bad_request", r)
		}
		for _, stream := range []string{"OUTPOST_JOBS", "OUTPOST_EVENTS", "OUTPOST_AUDIT"} {
			for _, cfg := range consumers(t, root, stream) {
				if cfg.DeliverSubject != "" {
					t.Errorf("consumer %s of %s pushes to %s", cfg.Name, stream, cfg.DeliverSubject)
				}
			}
		}
	})
}

// requireKept checks that a stream is the one it was (not deleted and
// made again) and lost no message (was not purged).
func requireKept(t testing.TB, before, after *jetstream.StreamInfo) {
	t.Helper()
	if !after.Created.Equal(before.Created) || after.State.FirstSeq != before.State.FirstSeq || after.State.Msgs < before.State.Msgs {
		t.Errorf("stream %s: created %s, messages %d from %d; before: created %s, messages %d from %d",
			before.Config.Name, after.Created, after.State.Msgs, after.State.FirstSeq, before.Created, before.State.Msgs, before.State.FirstSeq)
	}
}

// kvEntry is the current entry of key in bucket.
func kvEntry(t testing.TB, root *natsConn, bucket, key string) jetstream.KeyValueEntry {
	t.Helper()
	kv, err := root.js.KeyValue(ctxT(t), bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("%s %s: %v", bucket, key, err)
	}
	return e
}

// requireSameEntry checks that a KV entry holds what it held before. A
// credential record's last_seen moves whenever its holder connects, so it
// is left out.
func requireSameEntry(t testing.TB, before, after jetstream.KeyValueEntry) {
	t.Helper()
	strip := func(e jetstream.KeyValueEntry) map[string]any {
		var v map[string]any
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			t.Errorf("%s %s holds no record: %v\n%s", e.Bucket(), e.Key(), err, e.Value())
		}
		delete(v, "last_seen")
		return v
	}
	if a, b := strip(after), strip(before); !reflect.DeepEqual(a, b) {
		t.Errorf("%s %s was written: revision %d, value %s", before.Bucket(), before.Key(), after.Revision(), after.Value())
	}
}
