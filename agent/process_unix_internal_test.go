//go:build unix

package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-run/outpost/subjects"
)

// TestRunKillsJobWhoseReportFails: a job's process starts while its running
// report is on its way. If the report cannot be stored, nothing of the job
// may go on running, and run says why.
func TestRunKillsJobWhoseReportFails(t *testing.T) {
	root := t.TempDir()
	a := &Agent{dirs: newWorkDirs(root, nil), grace: time.Second, running: map[string]*process{}, stopped: map[string]pendingStop{}}
	// With the watchdog, as an agent runs: the job waits at its gate,
	// which opens as soon as it started, not when it was reported.
	w, err := startWatchdog()
	if err != nil {
		t.Fatal(err)
	}
	defer w.stop()
	a.watch = w
	pidFile := filepath.Join(t.TempDir(), "pid")
	job := subjects.Job{ID: testJob, JobSpec: subjects.JobSpec{Tag: "a", Command: []string{"sh", "-c", "echo $$ > " + pidFile + "; exec sleep 600"}}}
	reported := make(chan error, 1)
	ran := make(chan error, 1)
	go func() {
		_, err := a.run(context.Background(), job, 1, nil, reported)
		ran <- err
	}()
	var pid int
	waitFor(t, "the job's process to start while its report is on its way", func() bool {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid != 0
	})
	refused := errors.New("the store refused the report")
	reported <- refused
	select {
	case err := <-ran:
		if !errors.Is(err, refused) {
			t.Errorf("run returned %v, want the report's error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after the report failed")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the job's process %d still exists: %v", pid, err)
	}
	if len(a.running) != 0 {
		t.Errorf("the agent still counts %d running jobs", len(a.running))
	}
	waitFor(t, "the job's work directory to be removed", func() bool {
		left, err := os.ReadDir(root)
		return err == nil && len(left) == 0
	})
}

// A work directory serves a later run only as it was handed out: empty,
// a directory, mode 0700, and only once the run's processes are all gone.
func TestWorkDirReuse(t *testing.T) {
	root := t.TempDir()
	dirs := newWorkDirs(root, nil)
	for _, tc := range []struct {
		name  string
		ended bool
		spoil func(dir string) error
		kept  bool
	}{
		{"untouched", true, func(string) error { return nil }, true},
		{"processes may be left", false, func(string) error { return nil }, false},
		{"a file left", true, func(d string) error { return os.WriteFile(filepath.Join(d, "f"), nil, 0o600) }, false},
		{"a hidden file left", true, func(d string) error { return os.WriteFile(filepath.Join(d, ".f"), nil, 0o600) }, false},
		{"mode opened up", true, func(d string) error { return os.Chmod(d, 0o777) }, false},
		{"sticky", true, func(d string) error { return os.Chmod(d, 0o700|os.ModeSticky) }, false},
		{"swapped for a link", true, func(d string) error {
			if err := os.Remove(d); err != nil {
				return err
			}
			return os.Symlink(t.TempDir(), d)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := dirs.take()
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.spoil(dir); err != nil {
				t.Fatal(err)
			}
			dirs.give(dir, tc.ended)
			next, err := dirs.take()
			if err != nil {
				t.Fatal(err)
			}
			defer dirs.give(next, false)
			if (next == dir) != tc.kept {
				t.Errorf("the next run got %s after %s: kept %v, want %v", next, dir, next == dir, tc.kept)
			}
			if !tc.kept {
				if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s was not removed: %v", dir, err)
				}
			}
			if left, _ := os.ReadDir(next); len(left) != 0 {
				t.Errorf("the next run's directory holds %v", left)
			}
		})
	}
}

// Work directories have names no job can guess, and an agent whose jobs
// run as another user, and so share a uid, keeps none for a later run.
func TestWorkDirNamesAndRunAs(t *testing.T) {
	root := t.TempDir()
	dirs := newWorkDirs(root, nil)
	name := regexp.MustCompile(`^run-` + strconv.Itoa(os.Getpid()) + `-[0-9a-f]{32}$`)
	one, err := dirs.take()
	if err != nil {
		t.Fatal(err)
	}
	two, err := dirs.take()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{one, two} {
		if !name.MatchString(filepath.Base(d)) {
			t.Errorf("work directory %s: want run-<pid>-<32 hex digits>", d)
		}
	}
	if one == two {
		t.Errorf("two runs got %s", one)
	}
	shared := newWorkDirs(root, &jobUser{name: "job", uid: uint32(os.Getuid()), gid: uint32(os.Getgid())})
	dir, err := shared.take()
	if err != nil {
		t.Fatal(err)
	}
	shared.give(dir, true)
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an agent with --run-as kept %s: %v", dir, err)
	}
}
