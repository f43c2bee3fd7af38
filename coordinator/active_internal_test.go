package coordinator

import (
	"maps"
	"testing"

	"github.com/outpost-run/outpost/subjects"
)

// The view of unfinished jobs follows the records noted, and a sync's
// reading of the bucket does not undo what was noted while it read.
func TestActive(t *testing.T) {
	a := newActive()
	rec := func(id, tag string, state subjects.State, attempt int) subjects.Record {
		return subjects.Record{Job: subjects.Job{ID: id, Attempt: attempt, JobSpec: subjects.JobSpec{Tag: tag}}, State: state, Agent: "agent-" + tag}
	}
	a.note(rec("q1", "a", subjects.StateQueued, 1))
	a.note(rec("q2", "b", subjects.StateQueued, 1))
	a.note(rec("r1", "a", subjects.StateRunning, 2))
	a.note(rec("done", "a", subjects.StateRunning, 1))
	a.note(rec("done", "a", subjects.StateSucceeded, 1))
	if got := a.in(subjects.StateRunning, nil); len(got) != 1 || got["r1"] != (activeJob{subjects.StateRunning, "a", "agent-a", 2}) {
		t.Errorf("running: %v", got)
	}
	if got := a.in(subjects.StateQueued, func(j activeJob) bool { return j.tag == "b" }); !maps.Equal(got, map[string]activeJob{"q2": activeOf(rec("q2", "b", subjects.StateQueued, 1))}) {
		t.Errorf("queued of tag b: %v", got)
	}
	if got := a.tags(subjects.StateQueued); !maps.Equal(got, map[string]bool{"a": true, "b": true}) {
		t.Errorf("tags with queued jobs: %v", got)
	}

	// A sync reads q1 still queued and r1 running; meanwhile q1 starts, r1
	// ends, and n1 is submitted.
	a.begin()
	a.note(rec("q1", "a", subjects.StateRunning, 1))
	a.note(rec("r1", "a", subjects.StateFailed, 2))
	a.note(rec("n1", "c", subjects.StateQueued, 1))
	a.forget("q2")
	a.end(map[string]activeJob{
		"q1": activeOf(rec("q1", "a", subjects.StateQueued, 1)),
		"q2": activeOf(rec("q2", "b", subjects.StateQueued, 1)),
		"r1": activeOf(rec("r1", "a", subjects.StateRunning, 2)),
		"x1": activeOf(rec("x1", "d", subjects.StateRunning, 1)), // written by another coordinator
	})
	want := map[string]activeJob{
		"q1": activeOf(rec("q1", "a", subjects.StateRunning, 1)),
		"n1": activeOf(rec("n1", "c", subjects.StateQueued, 1)),
		"x1": activeOf(rec("x1", "d", subjects.StateRunning, 1)),
	}
	if !maps.Equal(a.jobs, want) {
		t.Errorf("after the sync: %v, want %v", a.jobs, want)
	}
	// A failed sync changes nothing.
	a.begin()
	a.end(nil)
	if !maps.Equal(a.jobs, want) {
		t.Errorf("after a failed sync: %v", a.jobs)
	}
}
