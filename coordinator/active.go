package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/outpost-run/outpost/subjects"
)

// active is the coordinator's view, in memory, of the jobs that have not
// ended: where each stands, on which agent and attempt. The lost-job check
// reads it every few seconds; reading the whole jobs bucket instead cost
// the coordinator CPU in proportion to every record it keeps (an idle
// coordinator with a few thousand finished jobs spent 4% of a core on it).
// It follows every record this coordinator writes or reads, and is read
// again from the bucket now and then (sync), which also catches what
// another coordinator wrote.
type active struct {
	mu   sync.Mutex
	jobs map[string]activeJob
	// during holds what was noted while a sync reads the bucket: newer
	// than what the sync read, so it wins. Nil when no sync runs.
	during map[string]activeJob
}

// activeJob is what the lost-job check needs of a record.
type activeJob struct {
	state      subjects.State
	tag, agent string
	attempt    int
}

func newActive() *active { return &active{jobs: map[string]activeJob{}} }

func activeOf(rec subjects.Record) activeJob {
	return activeJob{state: rec.State, tag: rec.Tag, agent: rec.Agent, attempt: rec.Attempt}
}

// note takes a record as it now stands.
func (a *active) note(rec subjects.Record) {
	a.mu.Lock()
	defer a.mu.Unlock()
	j := activeOf(rec)
	if a.during != nil {
		a.during[rec.ID] = j
	}
	if j.state.Terminal() {
		delete(a.jobs, rec.ID)
		return
	}
	a.jobs[rec.ID] = j
}

// has reports whether id is a job that has not ended, as far as known.
func (a *active) has(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.jobs[id]
	return ok
}

// forget drops a job whose record is gone.
func (a *active) forget(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.during != nil {
		a.during[id] = activeJob{state: subjects.StateSucceeded} // gone, as if ended
	}
	delete(a.jobs, id)
}

// in returns the jobs in state that keep keeps (nil keeps all), by ID.
func (a *active) in(state subjects.State, keep func(activeJob) bool) map[string]activeJob {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]activeJob{}
	for id, j := range a.jobs {
		if j.state == state && (keep == nil || keep(j)) {
			out[id] = j
		}
	}
	return out
}

// tags returns the tags that have jobs in state.
func (a *active) tags(state subjects.State) map[string]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]bool{}
	for _, j := range a.jobs {
		if j.state == state {
			out[j.tag] = true
		}
	}
	return out
}

// sync reads every record of the bucket again.
func (a *active) sync(ctx context.Context, r records) error {
	a.begin()
	read := map[string]activeJob{}
	err := scanKV(ctx, r.js, r.kv, func(_ string, value []byte) {
		var rec subjects.Record
		if json.Unmarshal(value, &rec) == nil && rec.ID != "" && !rec.State.Terminal() {
			read[rec.ID] = activeOf(rec)
		}
	})
	if err != nil {
		a.end(nil)
		return fmt.Errorf("read the jobs bucket: %w", err)
	}
	a.end(read)
	return nil
}

// begin starts keeping what is noted apart, for end.
func (a *active) begin() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.during = map[string]activeJob{}
}

// end takes read, the unfinished jobs as a sync found them, over what is
// known, but what was noted since begin over read; a nil read (the sync
// failed) changes nothing.
func (a *active) end(read map[string]activeJob) {
	a.mu.Lock()
	defer a.mu.Unlock()
	during := a.during
	a.during = nil
	if read == nil {
		return
	}
	for id, j := range during {
		if j.state.Terminal() {
			delete(read, id)
		} else {
			read[id] = j
		}
	}
	a.jobs = read
}
