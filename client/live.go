package client

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/subjects"
)

// liveMux shares one subscription to the live events of a tag and owner
// among the follows of a connection (Run, and ReadEvents with Follow), as nats.go shares one inbox subscription
// among requests. A Run must hear its job's events from before it knows
// the job's ID, so its subscription must be in place before the submit;
// and a subscription made there, in front of the submit, cost the submit
// about 0.15 ms of the server's time, which is a tenth of a trivial job's
// dispatch. The subscription stays while Runs use it and for liveLinger
// after, so a connection that runs job after job subscribes once, and one
// that stops running jobs stops hearing its other jobs' events.
type liveMux struct {
	mu   sync.Mutex
	tags map[string]*liveTag // by subject filter
}

// liveLinger is how long a tag's live subscription outlasts its last Run.
const liveLinger = 5 * time.Second

type liveTag struct {
	key   string // its subject filter, its name in liveMux.tags
	sub   *nats.Subscription
	runs  map[string][]*liveRun // by job ID: a connection may follow a job twice
	users int                   // Runs that joined and have not left
	// early holds the events of jobs no Run has claimed, for the Runs
	// whose submit is under way (waiting): a job's first events may come
	// before its submit's reply names it. A waiting Run was told the number
	// of the next event to come when it joined; what came before is not
	// its job's, and goes once no waiting Run is older.
	waiting    map[*liveRun]uint64
	early      []earlyEvent
	earlyBytes int
	next       uint64 // the number of the next event kept in early
	linger     *time.Timer
}

type earlyEvent struct {
	n   uint64
	job string
	ev  liveEvent
}

// liveEvent is a live event as the subscription heard it, with the kind
// its subject named, which deliver parsed already.
type liveEvent struct {
	m    *nats.Msg
	kind subjects.EventKind
}

// earlyMaxBytes bounds what early holds; past it, or liveQueue events, the
// waiting Runs are told they lost one.
const earlyMaxBytes = 8 << 20

// liveRun is one follow's share: its job's live events, in the order they
// came, and whether one was dropped on the way; and what the connection
// had lost when it joined (reconnects, the subscription's drops).
type liveRun struct {
	msgs       chan liveEvent
	lost       atomic.Bool
	lt         *liveTag
	reconnects uint64
	dropped    int
}

// join makes, or takes up, the live subscription of tag and owner for a
// follow, before its job is submitted or its stored events are read.
func (x *liveMux) join(c *Conn, tag, owner string) (*liveRun, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	key := subjects.LiveFilter(tag, owner)
	lt := x.tags[key]
	if lt == nil {
		lt = &liveTag{key: key, runs: map[string][]*liveRun{}, waiting: map[*liveRun]uint64{}}
		sub, err := c.Subscribe(key, func(m *nats.Msg) { x.deliver(lt, m) })
		if err != nil {
			return nil, fmt.Errorf("subscribe to live events: %w", err)
		}
		// A Run hears of a drop (Dropped) and catches up; the limits only
		// bound what waits in the client meanwhile.
		_ = sub.SetPendingLimits(liveQueue, 64<<20)
		lt.sub = sub
		if x.tags == nil {
			x.tags = map[string]*liveTag{}
		}
		x.tags[key] = lt
	}
	if lt.linger != nil {
		lt.linger.Stop()
		lt.linger = nil
	}
	lt.users++
	r := &liveRun{msgs: make(chan liveEvent, liveQueue), lt: lt, reconnects: c.Stats().Reconnects}
	r.dropped, _ = lt.sub.Dropped()
	lt.waiting[r] = lt.next
	return r, nil
}

// deliver hands a live event to the Run of its job, or keeps it while a
// submit is under way, in case it is that submit's job.
func (x *liveMux) deliver(lt *liveTag, m *nats.Msg) {
	e, err := subjects.ParseLive(m.Subject)
	if err != nil {
		return
	}
	ev := liveEvent{m, e.Kind}
	x.mu.Lock()
	defer x.mu.Unlock()
	if rs := lt.runs[e.Job]; len(rs) > 0 {
		for _, r := range rs {
			select {
			case r.msgs <- ev:
			default:
				r.lost.Store(true)
			}
		}
		return
	}
	if len(lt.waiting) == 0 {
		return
	}
	if len(lt.early) >= liveQueue || lt.earlyBytes+len(m.Data) > earlyMaxBytes {
		for r := range lt.waiting {
			r.lost.Store(true)
		}
		return
	}
	lt.early = append(lt.early, earlyEvent{lt.next, e.Job, ev})
	lt.earlyBytes += len(m.Data)
	lt.next++
}

// claim ends r's submit: with the job's ID (empty when the submit failed)
// r takes the job's events so far, and those to come.
func (x *liveMux) claim(r *liveRun, job string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	lt := r.lt
	delete(lt.waiting, r)
	if job != "" {
		lt.runs[job] = append(lt.runs[job], r)
	}
	oldest := lt.next
	for _, n := range lt.waiting {
		oldest = min(oldest, n)
	}
	kept := lt.early[:0]
	lt.earlyBytes = 0
	for _, e := range lt.early {
		switch {
		case e.job == job:
			select {
			case r.msgs <- e.ev:
			default:
				r.lost.Store(true)
			}
		case e.n >= oldest:
			kept = append(kept, e)
			lt.earlyBytes += len(e.ev.m.Data)
		}
	}
	clear(lt.early[len(kept):])
	lt.early = kept
}

// leave ends r's use of its subscription, which goes after liveLinger
// unless another follow joins.
func (x *liveMux) leave(r *liveRun, job string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	lt := r.lt
	if rs := slices.DeleteFunc(lt.runs[job], func(x *liveRun) bool { return x == r }); len(rs) > 0 {
		lt.runs[job] = rs
	} else {
		delete(lt.runs, job)
	}
	if lt.users--; lt.users > 0 {
		return
	}
	lt.linger = time.AfterFunc(liveLinger, func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		if lt.users == 0 && x.tags[lt.key] == lt {
			_ = lt.sub.Unsubscribe()
			delete(x.tags, lt.key)
		}
	})
}
