package agent_test

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/subjects"
)

// jobUserName is the unprivileged user the run-as tests make if it is
// missing.
const jobUserName = "outpost-job-test"

// needJobUser returns the test user, adding it if this machine lacks it,
// or skips the test where that cannot be done.
func needJobUser(t *testing.T) *user.User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: running jobs as another user needs root")
	}
	if u, err := user.Lookup(jobUserName); err == nil {
		return u
	}
	out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/home/"+jobUserName, "--shell", "/usr/sbin/nologin", jobUserName).CombinedOutput()
	if err != nil {
		t.Skipf("skipped: could not add the user %s with useradd: %v\n%s", jobUserName, err, out)
	}
	u, err := user.Lookup(jobUserName)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// A job of an agent with --run-as runs as that user, with only its own
// environment, owns its work directory, and can read neither the agent's
// creds nor its data directory.
func TestRunAs(t *testing.T) {
	u := needJobUser(t)
	t.Setenv("OUTPOST_TEST_AGENT_SECRET", "must-not-leak")
	s := newSite(t, coordinator.Limits{})
	work, err := os.MkdirTemp("", "outpost-runas-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	data := filepath.Dir(filepath.Dir(s.agentCreds))
	s.env.StartAgent(s.agentCreds, agent.Config{RunAs: jobUserName, CredsFile: s.agentCreds, WorkDir: work})

	r := s.submit(t, subjects.JobSpec{Tag: "a", Env: map[string]string{"MINE": "yes"}, Command: sh(`
		echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
		echo "home=$HOME"
		env | cut -d= -f1 | sort | tr '\n' ' '; echo
		cat ` + s.agentCreds + ` >/dev/null 2>&1 && echo "creds: READ" || echo "creds: denied"
		ls ` + data + ` >/dev/null 2>&1 && echo "data: LISTED" || echo "data: denied"
		ls ` + work + ` >/dev/null 2>&1 && echo "work root: LISTED" || echo "work root: denied"
		touch mine && echo "work dir: $(stat -c %U . mine | tr '\n' ' ')"`)})
	s.waitState(t, r.ID, subjects.StateSucceeded)
	stdout, stderr, _ := s.output(t, r.ID)
	lines := strings.Split(stdout, "\n")
	if len(lines) < 7 {
		t.Fatalf("output:\n%s\nstderr:\n%s", stdout, stderr)
	}
	if want := "uid=" + u.Uid + " gid=" + u.Gid + " groups=" + u.Gid; lines[0] != want {
		t.Errorf("the job ran as %q, want %q", lines[0], want)
	}
	if want := "home=" + u.HomeDir; lines[1] != want {
		t.Errorf("%q, want %q", lines[1], want)
	}
	env := strings.Fields(lines[2])
	// sh itself adds PWD (and some shells SHLVL and _).
	env = slices.DeleteFunc(env, func(k string) bool { return k == "PWD" || k == "SHLVL" || k == "_" || k == "OLDPWD" })
	if want := []string{"HOME", "MINE", "OUTPOST_ATTEMPT", "OUTPOST_JOB_ID", "OUTPOST_TAG", "PATH"}; !slices.Equal(env, want) {
		t.Errorf("the job's environment holds %v, want only %v", env, want)
	}
	for i, want := range []string{"creds: denied", "data: denied", "work root: denied", "work dir: " + jobUserName + " " + jobUserName + " "} {
		if lines[3+i] != want {
			t.Errorf("%q, want %q", lines[3+i], want)
		}
	}
}

// An agent refuses to run jobs as a user who could read its creds.
func TestRunAsRefusesReadableCreds(t *testing.T) {
	needJobUser(t)
	s := newSite(t, coordinator.Limits{})
	if err := os.Chmod(s.agentCreds, 0o644); err != nil {
		t.Fatal(err)
	}
	conn := s.env.Dial(s.agentCreds)
	_, err := agent.New(agent.Config{Conn: conn, RunAs: jobUserName, CredsFile: s.agentCreds, WorkDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "readable by everyone") {
		t.Errorf("error %v, want one saying the creds are readable by everyone", err)
	}
	if _, err := agent.New(agent.Config{Conn: conn, RunAs: "root", WorkDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "root") {
		t.Errorf("run as root: error %v", err)
	}
}
