package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestRedirectIntoJetStreamAPIKnownGap checks the part of NATS-NOTES point
// 5 that the listeners' own checks cannot cover. Any credential that may
// make one JetStream API request (a reader's pinned consumer, an agent's
// tag consumer) picks that request's reply subject, and the server itself
// then publishes there, with the account's full authority: a pull's status
// message (404 No Messages, 408 Request Timeout: headers, no body) or the
// API's JSON response. Aimed at $JS.API.* it is a JetStream API request;
// aimed at $KV.<bucket>.<key> it is stored as that key's value.
//
// Each attack here does real damage while the gap is open, so this test
// runs on a coordinator of its own and, while any attack succeeds, skips
// with what each did (see the report that came with it). It passes once
// all are refused or harmless: clients in an account of their own, which
// imports the API and the pinned consumers (NATS-NOTES point 6, design
// (b)), would confine every reply subject to that account.
func TestRedirectIntoJetStreamAPIKnownGap(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{})
	agent := c.issue(t, "agent", "agent-x", "--tag", "x")
	alice := c.issue(t, "user", "alice", "--tag", "local")
	watcher := c.issue(t, "observer", "watcher", "--tag", "local")
	root := dialNATS(t, c.url, c.creds("coordinator"), "_INBOX_coordinator")
	victim := c.admin.submit(t, "--tag", "local", "--", "echo", "the admin's job")
	c.admin.waitState(t, victim)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// damaged polls for the damage for a while; the server does it in
	// milliseconds when it does it at all.
	damaged := func(check func() bool) bool {
		deadline := time.Now().Add(3 * time.Second)
		for !check() {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
		return true
	}
	// emptyPull makes the server answer a pull with no messages to give,
	// at once, on reply.
	emptyPull := func(nc *natsConn, stream, consumer, reply string) {
		t.Helper()
		if err := nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+stream+"."+consumer, reply, []byte(`{"batch":1,"no_wait":true}`)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// reader makes who's pinned consumer on stream over a filter that
	// matches nothing yet.
	reader := func(nc *natsConn, who, stream, filter string) string {
		t.Helper()
		name := "r_" + who + "_1"
		body := strings.Replace(readerBody(name, filter, ""), `"OUTPOST_EVENTS"`, `"`+stream+`"`, 1)
		if r := jsRequest(t, nc, "$JS.API.CONSUMER.CREATE."+stream+"."+name+"."+filter, body); r.Error != nil {
			t.Fatalf("%s's consumer on %s: %+v", who, stream, r.Error)
		}
		return name
	}
	var open []string

	// An agent deletes the coordinator's consumer of status events: no job
	// record would change state again.
	ag := dialNATS(t, c.url, agent, "_INBOX_agent-x")
	emptyPull(ag, "OUTPOST_JOBS", "agents-x", "$JS.API.CONSUMER.DELETE.OUTPOST_EVENTS.coordinator")
	if damaged(func() bool {
		_, err := root.js.Consumer(ctx, "OUTPOST_EVENTS", "coordinator")
		return errors.Is(err, jetstream.ErrConsumerNotFound)
	}) {
		open = append(open, "an agent's empty pull, replied to $JS.API.CONSUMER.DELETE.OUTPOST_EVENTS.coordinator, deleted the coordinator's consumer")
	}

	// An observer, the auditor, deletes the audit trail.
	wa := dialNATS(t, c.url, watcher, "_INBOX_watcher")
	emptyPull(wa, "OUTPOST_AUDIT", reader(wa, "watcher", "OUTPOST_AUDIT", "outpost.audit.nobody.>"), "$JS.API.STREAM.DELETE.OUTPOST_AUDIT")
	if damaged(func() bool {
		_, err := root.js.Stream(ctx, "OUTPOST_AUDIT")
		return errors.Is(err, jetstream.ErrStreamNotFound)
	}) {
		open = append(open, "an observer's empty pull, replied to $JS.API.STREAM.DELETE.OUTPOST_AUDIT, deleted the audit stream")
	}

	// A user purges every job's output.
	al := dialNATS(t, c.url, alice, "_INBOX_alice")
	consumer := reader(al, "alice", "OUTPOST_EVENTS", "outpost.ev.*.alice.01m8463yqqbcm4s36x71kyz7zz.>")
	emptyPull(al, "OUTPOST_EVENTS", consumer, "$JS.API.STREAM.PURGE.OUTPOST_EVENTS")
	if damaged(func() bool {
		s, err := root.js.Stream(ctx, "OUTPOST_EVENTS")
		return err == nil && s.CachedInfo().State.Msgs == 0
	}) {
		open = append(open, "a user's empty pull, replied to $JS.API.STREAM.PURGE.OUTPOST_EVENTS, purged every job's events")
	}

	// A user overwrites another job's record, and the admin's credential
	// record with an API response whose "name" is her consumer's.
	emptyPull(al, "OUTPOST_EVENTS", consumer, "$KV.outpost_jobs."+victim)
	if damaged(func() bool { return !kvDecodes(t, root, "outpost_jobs", victim, "id", victim) }) {
		open = append(open, "a user's empty pull, replied to $KV.outpost_jobs."+victim+", overwrote that job's record with an empty value")
	}
	if err := al.PublishRequest("$JS.API.CONSUMER.INFO.OUTPOST_EVENTS."+consumer, "$KV.outpost_creds.admin", nil); err != nil {
		t.Fatal(err)
	}
	if damaged(func() bool { return !kvDecodes(t, root, "outpost_creds", "admin", "name", "admin") }) {
		r := c.admin.outpost(t, "admin", "ls")
		open = append(open, fmt.Sprintf("a user's consumer info request, replied to $KV.outpost_creds.admin, overwrote the admin's credential record (now 'outpost admin ls' says: %s)", strings.TrimSpace(r.stderr)))
	}

	if len(open) > 0 {
		t.Skipf("KNOWN GAP, open: reply subjects of JetStream API requests reach the JetStream API and the KV buckets:\n- %s", strings.Join(open, "\n- "))
	}
}

// kvDecodes reports whether key of bucket holds a JSON object whose field
// is want.
func kvDecodes(t *testing.T, root *natsConn, bucket, key, field, want string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := root.js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return false
	}
	var v map[string]any
	return json.Unmarshal(e.Value(), &v) == nil && v[field] == want
}
