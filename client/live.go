package client

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/subjects"
)

// liveMux shares one subscription to the caller's live events of a tag
// among the Runs of a connection, as nats.go shares one inbox subscription
// among requests. A Run must hear its job's events from before it knows
// the job's ID, so its subscription must be in place before the submit;
// and a subscription made there, in front of the submit, cost the submit
// about 0.15 ms of the server's time, which is a tenth of a trivial job's
// dispatch. The subscription stays while Runs use it and for liveLinger
// after, so a connection that runs job after job subscribes once, and one
// that stops running jobs stops hearing its other jobs' events.
type liveMux struct {
	mu   sync.Mutex
	tags map[string]*liveTag
}

// liveLinger is how long a tag's live subscription outlasts its last Run.
const liveLinger = 5 * time.Second

type liveTag struct {
	sub   *nats.Subscription
	runs  map[string]*liveRun // by job ID
	users int                 // Runs that joined and have not left
	// early holds, while a submit is under way (submitting), the events
	// of jobs no Run has claimed: the submitted job's first events may
	// come before its submit's reply names it.
	submitting int
	early      []*nats.Msg
	earlyLost  bool // early was full and dropped one
	linger     *time.Timer
}

// liveRun is one Run's share: its job's live events, in the order they
// came, and whether one was dropped on the way.
type liveRun struct {
	msgs chan *nats.Msg
	lost atomic.Bool
	sub  *nats.Subscription // the shared one, whose drops count for every Run
}

// join makes, or takes up, the live subscription of tag for a Run about to
// submit a job.
func (x *liveMux) join(c *Conn, tag string) (*liveTag, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	lt := x.tags[tag]
	if lt == nil {
		lt = &liveTag{runs: map[string]*liveRun{}}
		sub, err := c.Subscribe(subjects.LiveFilter(tag, c.Identity.Name), func(m *nats.Msg) { x.deliver(lt, m) })
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
		x.tags[tag] = lt
	}
	if lt.linger != nil {
		lt.linger.Stop()
		lt.linger = nil
	}
	lt.users++
	lt.submitting++
	return lt, nil
}

// deliver hands a live event to the Run of its job, or keeps it while a
// submit is under way, in case it is that submit's job.
func (x *liveMux) deliver(lt *liveTag, m *nats.Msg) {
	e, err := subjects.ParseLive(m.Subject)
	if err != nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if r := lt.runs[e.Job]; r != nil {
		select {
		case r.msgs <- m:
		default:
			r.lost.Store(true)
		}
		return
	}
	if lt.submitting > 0 {
		if len(lt.early) < liveQueue {
			lt.early = append(lt.early, m)
		} else {
			lt.earlyLost = true
		}
	}
}

// claim ends a Run's submit: with the job's ID (empty when the submit
// failed) it takes the job's events so far, and those to come.
func (x *liveMux) claim(lt *liveTag, job string) *liveRun {
	x.mu.Lock()
	defer x.mu.Unlock()
	var r *liveRun
	if job != "" {
		r = &liveRun{msgs: make(chan *nats.Msg, liveQueue), sub: lt.sub}
		r.lost.Store(lt.earlyLost)
		for _, m := range lt.early {
			if e, _ := subjects.ParseLive(m.Subject); e.Job == job {
				select {
				case r.msgs <- m:
				default:
					r.lost.Store(true)
				}
			}
		}
		lt.runs[job] = r
	}
	if lt.submitting--; lt.submitting == 0 {
		lt.early, lt.earlyLost = nil, false
	}
	return r
}

// leave ends a Run's use of its tag's subscription, which goes after
// liveLinger unless another Run joins.
func (x *liveMux) leave(tag string, lt *liveTag, job string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(lt.runs, job)
	if lt.users--; lt.users > 0 {
		return
	}
	lt.linger = time.AfterFunc(liveLinger, func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		if lt.users == 0 && x.tags[tag] == lt {
			_ = lt.sub.Unsubscribe()
			delete(x.tags, tag)
		}
	})
}
