package coordinator_test

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

func TestIssueThroughAPI(t *testing.T) {
	w := newWorld(t)
	ctx := testenv.Context(t)
	cred, creds, err := w.admin.Issue(ctx, subjects.IssueRequest{Name: "carol", Role: "user", Tags: []string{"a"}, Expires: subjects.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	id, err := accounts.ParseCreds([]byte(creds))
	if err != nil {
		t.Fatalf("the reply's creds do not parse: %v", err)
	}
	if id.Name != "carol" || id.Role != accounts.RoleUser || id.PublicKey != cred.PublicKey || cred.ExpiresAt == nil {
		t.Errorf("issued %+v, creds say %+v", cred, id)
	}
	// The new credential works at once.
	path := t.TempDir() + "/carol.creds"
	writeFile(t, path, creds)
	carol := w.env.Dial(path)
	if _, err := carol.Submit(ctx, spec("a")); err != nil {
		t.Errorf("carol submits: %v", err)
	}

	for _, bad := range []subjects.IssueRequest{
		{Name: "carol", Role: "user", Tags: []string{"a"}},             // taken
		{Name: "a.b", Role: "user", Tags: []string{"a"}},               // dotted
		{Name: "dave", Role: "user", Tags: []string{"pool:*"}},         // a template trick
		{Name: "coordinator", Role: "coordinator"},                     // reserved
		{Name: "eve", Role: "agent"},                                   // no tag
		{Name: "frank", Role: "superuser", Tags: []string{"a"}},        // no such role
		{Name: "gina", Role: "user", Tags: []string{"a"}, Expires: -1}, // past
	} {
		if _, _, err := w.admin.Issue(ctx, bad); err == nil {
			t.Errorf("issue %+v succeeded", bad)
		}
	}
	list, err := w.admin.Credentials(ctx, subjects.CredsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, c := range list {
		names[c.Name] = true
		if c.JWT != "" {
			t.Errorf("credential list carries a JWT for %s", c.Name)
		}
	}
	for _, n := range []string{"a.b", "dave", "eve", "frank", "gina"} {
		if names[n] {
			t.Errorf("refused credential %s was registered", n)
		}
	}
	if _, _, err := w.alice.Issue(ctx, subjects.IssueRequest{Name: "mallory", Role: "admin"}); err == nil {
		t.Error("a user issued a credential")
	} else {
		wantCode(t, err, subjects.CodeForbidden)
	}
}

func TestRevokeClosesConnectionAndRequeues(t *testing.T) {
	env := testenv.New(t)
	// A long ack wait: the job can only move on through the revocation.
	env.StartCoordinator(coordinator.Limits{AckWait: time.Hour, EventsMaxAge: time.Hour, EventsMaxBytes: 1 << 26, JobsMaxAge: time.Hour, Replicas: 1})
	ctx := testenv.Context(t)
	admin := env.Dial(env.Creds(accounts.RoleAdmin, "root"))
	gate := t.TempDir() + "/gate"
	first := env.Creds(accounts.RoleAgent, "first", "a")
	env.StartAgent(first, agent.Config{})
	rec := submit(t, admin, subjects.JobSpec{Tag: "a", Command: []string{"sh", "-c", "while [ ! -e " + gate + " ]; do sleep 0.05; done; echo attempt $OUTPOST_ATTEMPT"}})
	testenv.Eventually(t, "the job to run on the first agent", func() bool {
		r, err := admin.Get(ctx, rec.ID)
		return err == nil && r.State == subjects.StateRunning
	})

	closed := make(chan struct{})
	env.NATS(first, nats.ClosedHandler(func(*nats.Conn) { close(closed) }), nats.MaxReconnects(0))
	second := env.Creds(accounts.RoleAgent, "second", "a")
	env.StartAgent(second, agent.Config{})
	if _, err := admin.Revoke(ctx, "first"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("the revoked credential's connection stayed open")
	}
	writeFile(t, gate, "")
	var final *subjects.Record
	testenv.Eventually(t, "the job to end on the second agent", func() bool {
		r, err := admin.Get(ctx, rec.ID)
		final = r
		return err == nil && r.State.Terminal()
	})
	if final.State != subjects.StateSucceeded || final.Agent != "second" || final.Attempt != 2 {
		t.Errorf("after revocation: %+v", final)
	}
	// The revoked key never connects again; the name can be issued anew.
	if _, err := client.Dial(ctx, client.DialOptions{URL: env.URL, Creds: first}); err == nil {
		t.Error("revoked creds connected")
	}
	if _, err := admin.Revoke(ctx, "first"); err == nil {
		t.Error("revoked twice")
	}
	cred, _, err := admin.Issue(ctx, subjects.IssueRequest{Name: "first", Role: "agent", Tags: []string{"a"}})
	if err != nil {
		t.Fatalf("reissue a revoked name: %v", err)
	}
	list, err := admin.Credentials(ctx, subjects.CredsRequest{Role: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(c subjects.Credential) bool { return c.Name == "first" })
	if i < 0 {
		t.Fatal("the reissued credential is not listed")
	}
	if c := list[i]; c.PublicKey != cred.PublicKey || len(c.Revoked) != 1 || c.RevokedAt != nil {
		t.Errorf("reissued record: %+v", c)
	}
	if _, err := admin.Revoke(ctx, subjects.CoordinatorName); err == nil {
		t.Error("the coordinator's credential was revoked through the API")
	}
}

func TestAuditRecordsCalls(t *testing.T) {
	w := newWorld(t)
	ctx := testenv.Context(t)
	submit(t, w.alice, spec("a"))
	_, _ = w.alice.Submit(ctx, spec("b")) // refused: not alice's tag
	var entries []subjects.AuditEntry
	testenv.Eventually(t, "the audit trail to hold both submits", func() bool {
		entries = nil
		err := w.admin.ReadAudit(ctx, false, func(e subjects.AuditEntry) error {
			if e.Caller == "alice" && e.Verb == subjects.VerbSubmit {
				entries = append(entries, e)
			}
			return nil
		})
		return err == nil && len(entries) == 2
	})
	if entries[0].Result != "ok" || entries[0].Tag != "a" || entries[0].Target == "" || entries[1].Result != string(subjects.CodeForbidden) {
		t.Errorf("audit entries: %+v", entries)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
