package coordinator

import (
	"sync"

	"github.com/outpost-run/outpost/subjects"
)

// recent remembers the records of unfinished jobs as this coordinator
// last wrote them, with their revisions, so that the next change of one
// (a job's running, then its end) is a compare-and-set write alone: the
// read before each write was two of a trivial job's ten JetStream
// requests. It is bounded, by count and by bytes (a record may hold up to
// subjects.MaxSubmitBytes of stdin and environment), and forgets a job
// once it ended, or once the lost-job check's read of the whole bucket
// no longer finds it unfinished (it ended elsewhere, or expired); a record
// it does not hold is read as before.
type recent struct {
	mu    sync.Mutex
	recs  map[string]recentRecord
	bytes int
}

type recentRecord struct {
	rec  subjects.Record
	rev  uint64
	size int
}

const (
	recentMaxRecs  = 4096
	recentMaxBytes = 16 << 20
	// recentMaxSize is the largest record kept: most are a few hundred bytes.
	recentMaxSize = 16 << 10
)

func newRecent() *recent { return &recent{recs: map[string]recentRecord{}} }

// put remembers rec as written at rev, its JSON size bytes long, or
// forgets it if it ended or does not fit.
func (r *recent) put(rec subjects.Record, rev uint64, size int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.recs[rec.ID]; ok && e.rev > rev {
		return // a later write is remembered already
	}
	r.dropLocked(rec.ID)
	if rec.State.Terminal() || size > recentMaxSize || len(r.recs) >= recentMaxRecs || r.bytes+size > recentMaxBytes {
		return
	}
	r.recs[rec.ID] = recentRecord{rec: rec, rev: rev, size: size}
	r.bytes += size
}

// get returns the record of id as last written here, and its revision.
func (r *recent) get(id string) (subjects.Record, uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.recs[id]
	return e.rec, e.rev, ok
}

// retain forgets the records of the jobs keep does not keep: those that
// ended, or whose records expired, without a write of this coordinator.
func (r *recent) retain(keep func(id string) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.recs {
		if !keep(id) {
			r.dropLocked(id)
		}
	}
}

// drop forgets the record of id.
func (r *recent) drop(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropLocked(id)
}

func (r *recent) dropLocked(id string) {
	if e, ok := r.recs[id]; ok {
		r.bytes -= e.size
		delete(r.recs, id)
	}
}
