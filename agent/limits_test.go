package agent_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

func TestMaxOutputTruncatesWithAMarker(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	s.env.StartAgent(s.agentCreds, agent.Config{MaxOutput: 100})
	// 50 lines of 10 bytes: 10 fit, 40 do not.
	job := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("for i in $(seq 1 50); do echo 123456789; done")})
	s.waitState(t, job.ID, subjects.StateSucceeded)
	var out, errOut strings.Builder
	err := s.alice.ReadEvents(testenv.Context(t), job.ID, client.ReadOptions{}, func(ev client.Event) error {
		if ev.Log != nil && ev.Log.Stream == subjects.StreamStdout {
			out.Write(ev.Log.Data)
		} else if ev.Log != nil {
			errOut.Write(ev.Log.Data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), "123456789\n"); got != 10 {
		t.Errorf("kept %d lines, want 10", got)
	}
	if want := "[outpost: output truncated at 100 bytes; 40 more lines were not kept]\n"; errOut.String() != want {
		t.Errorf("marker %q, want %q", errOut.String(), want)
	}
}

func TestQueueTimeoutFailsAJobNoAgentStarted(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	marker := t.TempDir() + "/ran"
	job := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("touch " + marker), QueueTimeout: subjects.Duration(time.Millisecond)})
	r := s.waitState(t, job.ID, subjects.StateFailed)
	if !strings.Contains(r.Error, "queue_timeout") {
		t.Errorf("reason %q does not name the queue timeout", r.Error)
	}
	// An agent that comes later never runs it.
	s.startAgent(t)
	later := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("true")})
	s.waitState(t, later.ID, subjects.StateSucceeded)
	if fileExists(marker) {
		t.Error("the expired job ran")
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
