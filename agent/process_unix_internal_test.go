//go:build unix

package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
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
	a := &Agent{work: t.TempDir(), grace: time.Second, running: map[string]*process{}, stopped: map[string]pendingStop{}}
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
		left, err := os.ReadDir(a.work)
		return err == nil && len(left) == 0
	})
}
