package agent

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-run/outpost/subjects"
)

const testJob = "01jd7x3k9q8r6t5v4w3y2z1a0b"

func TestExitResult(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason subjects.State
		args   []string
		state  subjects.State
		code   int
		err    string
	}{
		{"success", "", []string{"true"}, subjects.StateSucceeded, 0, ""},
		{"exit status", "", []string{"sh", "-c", "exit 3"}, subjects.StateFailed, 3, "exit status 3"},
		{"exit 255", "", []string{"sh", "-c", "exit 255"}, subjects.StateFailed, 255, "exit status 255"},
		{"SIGTERM", "", []string{"sh", "-c", "kill -TERM $$"}, subjects.StateFailed, 128 + 15, "killed by signal terminated"},
		{"SIGKILL", "", []string{"sh", "-c", "kill -KILL $$"}, subjects.StateFailed, 128 + 9, "killed by signal killed"},
		{"stopped", subjects.StateStopped, []string{"sh", "-c", "kill -TERM $$"}, subjects.StateStopped, 128 + 15, "stopped on request"},
		{"stopped but exited 0", subjects.StateStopped, []string{"true"}, subjects.StateStopped, 0, "stopped on request"},
		{"timed out", subjects.StateTimedOut, []string{"sh", "-c", "kill -KILL $$"}, subjects.StateTimedOut, 128 + 9, "ran past its timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tc.args[0], tc.args[1:]...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			werr := cmd.Wait()
			r := exitResult(cmd.ProcessState, werr, tc.reason)
			if r.state != tc.state || r.exitCode == nil || *r.exitCode != tc.code || r.err != tc.err {
				t.Errorf("got %s %v %q, want %s %d %q", r.state, deref(r.exitCode), r.err, tc.state, tc.code, tc.err)
			}
		})
	}
	r := exitResult(nil, errors.New("no child"), "")
	if r.state != subjects.StateFailed || *r.exitCode != -1 || !strings.Contains(r.err, "no child") {
		t.Errorf("without a process state: %+v", r)
	}
}

func TestStartFailure(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("#!/bin/sh\necho hi\n"), 0o644)
	noShebang := filepath.Join(dir, "noshebang")
	os.WriteFile(noShebang, []byte{0x7f, 'E', 'L', 'F', 0, 0, 0}, 0o755)
	for _, tc := range []struct {
		name, prog string
		code       int
		err        string
	}{
		{"not on PATH", "outpost-no-such-command", 127, "command not found"},
		{"no such file", filepath.Join(dir, "missing"), 127, "command not found"},
		{"not executable", plain, 126, "permission denied"},
		{"a directory", dir, 126, "permission denied"},
		{"not a program", noShebang, 126, "could not start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := exec.Command(tc.prog).Start()
			if err == nil {
				t.Fatal("started")
			}
			r := startFailure(tc.prog, err)
			if r.state != subjects.StateFailed || *r.exitCode != tc.code || !strings.Contains(r.err, tc.err) || !strings.Contains(r.err, tc.prog) {
				t.Errorf("%v: got %s %d %q, want %d %q", err, r.state, *r.exitCode, r.err, tc.code, tc.err)
			}
		})
	}
}

func TestJobEnv(t *testing.T) {
	t.Setenv("HOME", "/home/outpost-test")
	t.Setenv("PATH", "/opt/bin:/usr/bin")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "agent-secret")
	t.Setenv("OUTPOST_CREDS", "/etc/outpost/agent.creds")
	t.Setenv("NATS_URL", "nats://internal:4222")
	job := subjects.Job{ID: testJob, JobSpec: subjects.JobSpec{Tag: "gpu", Env: map[string]string{"MODE": "fast", "EMPTY": ""}}}
	env := jobEnv(job, 2, "/home/outpost-test", nil)
	got := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("entry %q", kv)
		}
		if _, dup := got[k]; dup {
			t.Errorf("%s appears twice", k)
		}
		got[k] = v
	}
	want := map[string]string{
		"PATH": "/opt/bin:/usr/bin", "HOME": "/home/outpost-test",
		"OUTPOST_JOB_ID": testJob, "OUTPOST_ATTEMPT": "2", "OUTPOST_TAG": "gpu",
		"MODE": "fast", "EMPTY": "",
	}
	keys := func(m map[string]string) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(keys(got), keys(want)) {
		t.Errorf("environment holds %v, want only %v", keys(got), keys(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	t.Setenv("PATH", "")
	for _, kv := range jobEnv(job, 1, "", nil) {
		if strings.HasPrefix(kv, "PATH=") && kv == "PATH=" {
			t.Error("an empty PATH reaches the job; it gets a default")
		}
	}
}

func TestWorkDir(t *testing.T) {
	root := t.TempDir()
	dirs := newWorkDirs(root, nil)
	a := &Agent{dirs: dirs}
	abs := t.TempDir()
	for _, tc := range []struct {
		dir, want string // want: inside the run's own directory, or absolute
		err       bool
	}{
		{"", ".", false},
		{".", ".", false},
		{"sub", "sub", false},
		{"sub/deeper/", "sub/deeper", false},
		{"a/../b", "b", false},
		{abs, abs, false},
		{"..", "", true},
		{"../escape", "", true},
		{"a/../../escape", "", true},
		{"../run-" + strconv.Itoa(os.Getpid()) + "-", "", true},
		{"../../../../etc", "", true},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			job := subjects.Job{ID: testJob, JobSpec: subjects.JobSpec{Dir: tc.dir}}
			dir, release, err := a.workDir(job)
			if tc.err {
				if err == nil {
					release(true)
					t.Fatalf("accepted, giving %s", dir)
				}
				if !strings.Contains(err.Error(), "leaves the job's work directory") {
					t.Errorf("error %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			left, _ := os.ReadDir(root)
			if len(left) != 1 || !left[0].IsDir() {
				t.Fatalf("the work root holds %v, want the run's directory", left)
			}
			own := filepath.Join(root, left[0].Name())
			want := tc.want
			if !filepath.IsAbs(want) {
				want = filepath.Join(own, want)
			}
			if dir != want {
				t.Errorf("dir %s, want %s", dir, want)
			}
			fi, err := os.Stat(dir)
			if err != nil || !fi.IsDir() {
				t.Fatalf("%s is not a directory: %v", dir, err)
			}
			if fi, _ := os.Stat(own); fi.Mode().Perm() != 0o700 {
				t.Errorf("work directory mode %o", fi.Mode().Perm())
			}
			// A run that may have left a process behind, or left files,
			// takes its directory with it; the absolute dir stays.
			release(tc.dir != "sub" && tc.dir != "sub/deeper/" && tc.dir != "a/../b" && tc.dir != abs)
			if _, err := os.Stat(abs); err != nil {
				t.Error("release removed an absolute dir the job named")
			}
			left, _ = os.ReadDir(root)
			// A Windows agent keeps none (see fileOwner).
			if kept := (tc.dir == "" || tc.dir == ".") && runtime.GOOS != "windows"; kept != (len(left) == 1) {
				t.Errorf("after release the work root holds %v, want the directory kept: %v", left, kept)
			}
		})
	}
	dirs.close()
	if left, _ := os.ReadDir(root); len(left) != 0 {
		t.Errorf("close left %v", left)
	}
}

// waitFor is testenv.Eventually, which this package's own tests cannot
// import (testenv imports the agent).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
