package agent_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

// A job's secret reaches its environment and nothing else: its output
// shows it masked, and no byte the server stored (streams, buckets, the
// audit trail), no record and no log line of the coordinator or the agent
// holds it. An agent the secrets were not sealed to hands the job back.
func TestSecrets(t *testing.T) {
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	s.env.StartAgent(s.agentCreds, agent.Config{Concurrency: 1, StopGrace: testenv.Timeout})
	ctx := testenv.Context(t)
	testenv.Eventually(t, "agent-a's key to be known", func() bool {
		keys, err := s.alice.Agents(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		return len(keys) == 1 && keys[0].Name == "agent-a" && keys[0].XKey != ""
	})
	secret := "plaintext-" + strings.ToLower(ulid.Make().String())
	canary := "canary-" + strings.ToLower(ulid.Make().String())
	sealed, err := s.alice.SealSecrets(ctx, "a", map[string]string{"TOKEN": secret})
	if err != nil {
		t.Fatal(err)
	}

	// Keep agent-a busy, and bring in agent-b, which joins after the
	// secrets were sealed: it takes the job, cannot open it, hands it back.
	dir := t.TempDir()
	block := s.submit(t, subjects.JobSpec{Tag: "a", Dir: dir, Command: sh(`while [ ! -e go ]; do sleep 0.01; done`)})
	s.waitState(t, block.ID, subjects.StateRunning)
	s.env.StartAgent(s.env.Creds(accounts.RoleAgent, "agent-b", "a"), agent.Config{Concurrency: 1})
	mark := s.env.Logs.Len()
	r := s.submit(t, subjects.JobSpec{Tag: "a", Secrets: sealed, MaxAttempts: 20, Command: sh(`
		echo "token=$TOKEN ` + canary + `"
		echo "$TOKEN$TOKEN" >&2
		printf %s "$TOKEN" | sha256sum | cut -d" " -f1
		head -c ` + fmt.Sprint(subjects.MaxLine-5) + ` /dev/zero | tr '\0' x; echo "$TOKEN"
		head -c ` + fmt.Sprint(subjects.MaxLine) + ` /dev/zero | tr '\0' y`)})
	s.env.Logs.Wait(t, mark, "agent-b to hand the job back", func(e testenv.Entry) bool {
		return e.Msg == "cannot open the job's secrets; it goes back to the queue" && e.Attrs["agent"] == "agent-b"
	})
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rec := s.waitState(t, r.ID, subjects.StateSucceeded)
	if rec.Agent != "agent-a" {
		t.Errorf("ran on %s, want agent-a, the one the secrets were sealed to", rec.Agent)
	}
	stdout, stderr, _ := s.output(t, r.ID)
	// Two lines are longer than a chunk: the chunk's end cuts the secret
	// in the first in two, and the output ends with the second, at a
	// chunk's end, with no newline (one is added, as to any last line).
	if want := "token=*** " + canary + "\n" + fmt.Sprintf("%x", sha256.Sum256([]byte(secret))) + "\n" +
		strings.Repeat("x", subjects.MaxLine-5) + "***\n" + strings.Repeat("y", subjects.MaxLine) + "\n"; stdout != want {
		t.Errorf("stdout ends %q (%d bytes), want it to end %q (%d bytes)", stdout[max(0, len(stdout)-80):], len(stdout), want[max(0, len(want)-80):], len(want))
	}
	if stderr != "******\n" {
		t.Errorf("stderr %q, want the secret masked twice", stderr)
	}

	// The canary the same job printed is on disk: the store is flushed.
	store := s.env.Auth.JetStreamDir()
	testenv.Eventually(t, "the job's output to be in the store directory", func() bool {
		return len(testenv.FilesHolding(t, store, canary)) > 0
	})
	if files := testenv.FilesHolding(t, s.env.Auth.Dir(), secret); len(files) > 0 {
		t.Errorf("the secret is stored in the clear in %v", files)
	}
	b, _ := json.Marshal(rec)
	if bytes.Contains(b, []byte(secret)) || rec.Secrets == nil {
		t.Errorf("the record holds the secret, or lost its sealed form: %s", b)
	}
	if n := s.env.Logs.Count(0, func(e testenv.Entry) bool {
		all, _ := json.Marshal(e)
		return strings.Contains(string(all), secret)
	}); n > 0 {
		t.Errorf("%d log entries hold the secret", n)
	}
}

// Only submitters of a tag learn its agents' keys.
func TestAgentsVerb(t *testing.T) {
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	watcher := s.env.Dial(s.env.Creds(accounts.RoleObserver, "watcher", "a"))
	bob := s.env.Dial(s.env.Creds(accounts.RoleUser, "bob", "b"))
	ctx := testenv.Context(t)
	for _, c := range []struct {
		name string
		err  error
	}{
		{"watcher", func() error { _, err := watcher.Agents(ctx, "a"); return err }()},
		{"bob", func() error { _, err := bob.Agents(ctx, "a"); return err }()},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), string(subjects.CodeForbidden)) {
			t.Errorf("%s asking for the agents of a: %v, want forbidden", c.name, c.err)
		}
	}
	if keys, err := s.alice.Agents(ctx, "a"); err != nil || len(keys) != 0 {
		t.Errorf("no agent online: %v, %v", keys, err)
	}
	if _, err := s.alice.SealSecrets(ctx, "a", map[string]string{"X": "y"}); err == nil || !strings.Contains(err.Error(), "no agent of tag a is online") {
		t.Errorf("sealing with no agent online: %v", err)
	}
}
