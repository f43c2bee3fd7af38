package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/outpost-run/outpost/internal/testenv"
)

// TestSecretsThroughTheCLI: 'outpost run --secret' hands the job its
// secret, which shows masked in what the CLI prints, and which no file of
// the coordinator's data directory (the JetStream store with its streams
// and buckets, the audit trail included) and nothing 'status' or 'ls'
// prints holds in the clear. 'agents' lists the keys it was sealed to.
func TestSecretsThroughTheCLI(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{})
	testenv.EventuallyWithin(t, startTimeout, "the local agent's key to be known", func() bool {
		r := c.admin.mustOutpost(t, "agents", "--tag", "local")
		return strings.Contains(r.stdout, "local-agent  X")
	})
	secret := "plaintext-" + strings.ToLower(ulid.Make().String())
	canary := "canary-" + strings.ToLower(ulid.Make().String())
	file := filepath.Join(c.admin.dir, "token")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := c.admin.outpost(t, "run", "--tag", "local", "--secret", "TOKEN=@"+file, "--",
		"sh", "-c", `echo "token=$TOKEN `+canary+`"; echo "[$TOKEN]" >&2`)
	if r.code != 0 || r.stdout != "token=*** "+canary+"\n" || r.stderr != "[***]\n" {
		t.Fatalf("want the secret masked:\n%s", r)
	}
	for _, args := range [][]string{{"ls", "-o", "json"}, {"audit"}} {
		if r := c.admin.mustOutpost(t, args...); strings.Contains(r.stdout, secret) {
			t.Errorf("outpost %s shows the secret", strings.Join(args, " "))
		}
	}
	testenv.EventuallyWithin(t, jobTimeout, "the job's output to be on disk", func() bool {
		return len(testenv.FilesHolding(t, c.data, canary)) > 0
	})
	if files := testenv.FilesHolding(t, c.data, secret); len(files) > 0 {
		t.Errorf("the secret is in the clear in %v", files)
	}
	if strings.Contains(c.proc.stderr.String(), secret) || strings.Contains(c.proc.stdout.String(), secret) {
		t.Error("the coordinator logged the secret")
	}
	// Without a value, the secret comes from the submitter's environment.
	r = runCmd(t, c.admin.dir, append(c.admin.env(), "TOKEN="+secret), bin("outpost"),
		"run", "--tag", "local", "--secret", "TOKEN", "--", "sh", "-c", `echo "$TOKEN"`)
	if r.code != 0 || r.stdout != "***\n" {
		t.Errorf("--secret TOKEN from the environment:\n%s", r)
	}
}

// TestLimitsThroughTheCLI: a job over its memory limit ends failed with
// the reason, and 'status' reports what it used.
func TestLimitsThroughTheCLI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: the agent needs root to make cgroups here")
	}
	t.Parallel()
	c := startCoordinator(t, coordOptions{})
	r := c.admin.outpost(t, "run", "--tag", "local", "--memory", "32Mi", "--", "tail", "/dev/zero")
	if r.code != 137 || !strings.Contains(r.stderr, "memory limit of 32Mi") {
		t.Fatalf("want exit 137 and the memory limit named:\n%s", r)
	}
	id := c.admin.list(t)[0].ID
	st := c.admin.mustOutpost(t, "status", id)
	for _, want := range []string{"reason:       oom_killed", "limits:       memory=32Mi", "peak memory:", "cpu time:"} {
		if !strings.Contains(st.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, st.stdout)
		}
	}
}
