//go:build unix

package agent

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// The gate holds a job until the watchdog knows its process group, and an
// agent that dies before that (here: gives up) never lets it run.
func TestGate(t *testing.T) {
	w, err := startWatchdog()
	if err != nil {
		t.Skip(err)
	}
	defer w.stop()
	for _, run := range []bool{true, false} {
		dir := t.TempDir()
		cmd := exec.Command("sh", "-c", `echo "$0|$1" > ran`, "zero", "one two")
		cmd.Dir = dir
		open, err := w.gate(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		open(run)
		err = cmd.Wait()
		b, rerr := os.ReadFile(filepath.Join(dir, "ran"))
		var ee *exec.ExitError
		switch {
		case run && (err != nil || string(b) != "zero|one two\n"):
			t.Errorf("opened: %v, ran %q (%v)", err, b, rerr)
		case !run && (!errors.As(err, &ee) || ee.ExitCode() != 125 || rerr == nil):
			t.Errorf("given up: %v, and the job ran: %v", err, rerr == nil)
		}
	}
	// What exec refuses is not gated, so it fails as before.
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, []byte("echo hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(plain)
	if _, err := w.gate(cmd); err != nil || cmd.Path != plain {
		t.Errorf("a file without #! was gated: %v %s", err, cmd.Path)
	}
}

// The watchdog kills what is in the cgroups of the jobs it was told of,
// and nothing in the others beside them: another agent process of the
// same name, started while this one drained, keeps its jobs. The cgroups
// here are directories with a cgroup.procs file, as the watchdog reads
// them.
func TestWatchdogKillsItsJobsCgroups(t *testing.T) {
	w, err := startWatchdog()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	sleeper := func(job string) *exec.Cmd {
		cmd := exec.Command("sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		if err := os.MkdirAll(filepath.Join(dir, job), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, job, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	mine, below := sleeper("job1"), sleeper(filepath.Join("job1", "inner"))
	ended, others := sleeper("job2"), sleeper("job3")
	w.cgroups(dir)
	w.addJob("job1")
	w.addJob("job2")
	w.removeJob("job2", false)
	var exited sync.WaitGroup
	for _, cmd := range []*exec.Cmd{mine, below} {
		exited.Go(func() { _ = cmd.Wait() })
	}
	w.stop()
	done := make(chan struct{})
	go func() { exited.Wait(); close(done) }()
	waitFor(t, "the job in the watchdog's cgroup, and in one below it, to be killed", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	for _, cmd := range []*exec.Cmd{ended, others} {
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			t.Errorf("process %d, in a cgroup the watchdog was not (or no longer) told of, was killed: %v", cmd.Process.Pid, err)
		}
	}
}
