package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
)

// TestTagIsolation: jobs run only on agents of their own tag, and the NATS
// server itself refuses an agent of one tag everything of another: its
// consumer, its events, its control messages, the job queue at large, and
// making streams or consumers. Users and observers stay inside their scope.
func TestTagIsolation(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{creds: []accounts.Request{
		{Name: "agent-b", Role: accounts.RoleAgent, Tags: []string{"b"}},
		{Name: "watcher-b", Role: accounts.RoleObserver, Tags: []string{"b"}},
		{Name: "alice", Role: accounts.RoleUser, Tags: []string{"local"}},
	}})
	c.startAgent(t, "agent-b", "--concurrency", "2")

	agentOf := map[string]string{"local": "local-agent", "b": "agent-b"}
	jobs := map[string]string{} // job ID -> tag
	var localJob, bJob string
	for range 3 {
		for _, tag := range []string{"local", "b"} {
			id := c.admin.submit(t, "--tag", tag, "--", "sh", "-c", "echo $OUTPOST_TAG")
			jobs[id] = tag
			if tag == "b" {
				bJob = id
			} else {
				localJob = id
			}
		}
	}
	for id, tag := range jobs {
		rec := c.admin.waitState(t, id)
		if rec.State != "succeeded" || rec.Agent != agentOf[tag] {
			t.Errorf("job %s of tag %s: state %s on agent %q, want succeeded on %s", id, tag, rec.State, rec.Agent, agentOf[tag])
		}
		if r := c.admin.mustOutpost(t, "logs", id); r.stdout != tag+"\n" {
			t.Errorf("job %s of tag %s printed %q", id, tag, r.stdout)
		}
	}

	t.Run("agent", func(t *testing.T) {
		local := dialNATS(t, c.url, c.creds("local-agent"), "_INBOX_local-agent")
		// The control: what the agent may do works on this connection.
		if m, err := local.Request("$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-local", []byte(`{"batch":1,"no_wait":true}`), startTimeout); err != nil || m.Header.Get("Status") != "404" {
			t.Fatalf("the local agent cannot pull from its own consumer: %v, %v", m, err)
		}

		local.requireDenied(t, "$JS.API.CONSUMER.INFO.OUTPOST_JOBS.agents-b", func(ctx context.Context) error {
			_, err := local.js.Consumer(ctx, "OUTPOST_JOBS", "agents-b")
			return err
		})
		next := "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS.agents-b"
		local.requireDenied(t, next, func(ctx context.Context) error {
			_, err := local.RequestWithContext(ctx, next, []byte(`{"batch":1,"expires":1000000000}`))
			return err
		})
		for _, kind := range []string{"log", "status"} {
			subj := "outpost.ev.b.admin." + bJob + "." + kind
			m := nats.NewMsg(subj)
			m.Header.Set("Outpost-Stream", "stdout")
			m.Header.Set("Outpost-Attempt", "1")
			m.Header.Set("Outpost-Seq", "2")
			m.Data = []byte("forged\n")
			if kind == "status" {
				m.Data = []byte(`{"job":"` + bJob + `","state":"failed","attempt":1,"agent":"local-agent"}`)
			}
			if err := local.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			local.waitDenied(t, subj)
		}
		for _, subj := range []string{"outpost.ctl.b.*", "outpost.jobs.>"} {
			if _, err := local.SubscribeSync(subj); err != nil {
				t.Fatal(err)
			}
			local.waitDenied(t, subj)
		}
		local.requireDenied(t, "$JS.API.STREAM.CREATE.ROGUE", func(ctx context.Context) error {
			_, err := local.js.CreateStream(ctx, jetstream.StreamConfig{Name: "ROGUE", Subjects: []string{"rogue.>"}})
			return err
		})
		local.requireDenied(t, "$JS.API.CONSUMER.CREATE.OUTPOST_JOBS.", func(ctx context.Context) error {
			_, err := local.js.CreateConsumer(ctx, "OUTPOST_JOBS", jetstream.ConsumerConfig{Durable: "agents-rogue", FilterSubject: "outpost.jobs.b.>"})
			return err
		})
		local.requireDenied(t, "$JS.API.CONSUMER.CREATE.OUTPOST_EVENTS.", func(ctx context.Context) error {
			_, err := local.js.CreateConsumer(ctx, "OUTPOST_EVENTS", jetstream.ConsumerConfig{Name: "r_local-agent_1", FilterSubject: "outpost.ev.b.>"})
			return err
		})

		// And the other way round.
		b := dialNATS(t, c.url, c.creds("agent-b"), "_INBOX_agent-b")
		b.requireDenied(t, "$JS.API.CONSUMER.INFO.OUTPOST_JOBS.agents-local", func(ctx context.Context) error {
			_, err := b.js.Consumer(ctx, "OUTPOST_JOBS", "agents-local")
			return err
		})

		// The forged events were never stored or applied.
		if r := c.admin.mustOutpost(t, "logs", bJob); r.stdout != "b\n" {
			t.Errorf("job %s's log after the forgery attempt: %q", bJob, r.stdout)
		}
		if rec := c.admin.status(t, bJob); rec.State != "succeeded" || rec.Agent != "agent-b" {
			t.Errorf("job %s after the forgery attempt: %s on %s", bJob, rec.State, rec.Agent)
		}
	})

	t.Run("observer", func(t *testing.T) {
		w := c.as("watcher-b")
		if r := w.outpost(t, "logs", bJob); r.code != 0 || r.stdout != "b\n" {
			t.Errorf("observer of b replaying a job of b:\n%s", r)
		}
		if r := w.outpost(t, "logs", localJob); r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "no events visible to watcher-b") {
			t.Errorf("observer of b replayed a job of local:\n%s", r)
		}
		if r := w.outpost(t, "run", "--tag", "b", "--", "true"); r.code == 0 || !strings.Contains(r.stderr, `observer "watcher-b" may not call submit`) {
			t.Errorf("observer submitting a job: want a refusal\n%s", r)
		}
	})

	t.Run("user", func(t *testing.T) {
		alice := c.as("alice")
		if r := alice.outpost(t, "run", "--tag", "b", "--", "true"); r.code == 0 || !strings.Contains(r.stderr, `may not submit to tag "b"`) {
			t.Errorf("user of local submitting to b:\n%s", r)
		}
		if r := alice.outpost(t, "run", "--tag", "local", "--", "echo", "mine"); r.code != 0 || r.stdout != "mine\n" {
			t.Errorf("user of local running a job:\n%s", r)
		}
		if r := alice.outpost(t, "status", localJob); r.code == 0 || !strings.Contains(r.stderr, "no job "+localJob) {
			t.Errorf("user reading the admin's job:\n%s", r)
		}
		if r := alice.outpost(t, "logs", localJob); r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "no events visible to alice") {
			t.Errorf("user replaying the admin's job:\n%s", r)
		}
		if r := alice.mustOutpost(t, "whoami"); !strings.Contains(r.stdout, "name: alice\nrole: user\ntags: local\n") {
			t.Errorf("whoami of alice:\n%s", r.stdout)
		}
		recs := alice.list(t)
		if len(recs) != 1 || recs[0].Owner != "alice" {
			t.Errorf("user's ls: %+v, want only her own job", recs)
		}
	})
}
