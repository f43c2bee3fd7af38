package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/subjects"
)

// ErrRevoked is returned by Run when the server says the agent's credential
// was revoked or has expired: it can never connect again.
var ErrRevoked = errors.New("credential revoked or expired")

// Config is what an agent needs.
type Config struct {
	// Conn is a connection made with the agent's creds.
	Conn *client.Conn
	// Concurrency is how many jobs run at once; zero means 1.
	Concurrency int
	// WorkDir holds each job's work directory; empty means a temporary one.
	WorkDir string
	// StopGrace is how long a stopped job has between SIGTERM and SIGKILL
	// when the stop request names no grace; zero means 10s.
	StopGrace time.Duration
	// Heartbeat is how often the agent announces itself; zero means 5s.
	Heartbeat time.Duration
	// MaxOutput caps the output bytes kept per attempt; past it lines are
	// dropped and a marker line says how many. Zero means DefaultMaxOutput.
	MaxOutput int64
	// MaxBuffered bounds the output bytes the agent holds, for all its jobs,
	// that NATS has not yet stored: while the link is down the jobs run on
	// and their lines wait here; past the bound lines are dropped, and a
	// marker line says how many once there is room again. Zero means
	// DefaultMaxBuffered; less than MinBuffered is refused.
	MaxBuffered int64
	// DrainTimeout is how long Run, once its context ends, lets running
	// jobs finish before it kills them and hands them back to the queue.
	// Zero kills them at once.
	DrainTimeout time.Duration
	// Cgroups say where jobs' cgroups go, or turn them off.
	Cgroups CgroupOptions
	// RunAs names the user jobs run as, with that user's uid and gid and
	// HOME; empty runs them as the agent's own user. Its work directory is
	// the job's; the agent's work root can be passed through but not listed.
	RunAs string
	// CredsFile is the agent's creds file. With RunAs, New refuses to start
	// if that user could read it.
	CredsFile string
	// Logger; nil means slog.Default.
	Logger *slog.Logger
}

// DefaultMaxOutput is the output kept per attempt unless Config says.
const DefaultMaxOutput = 256 << 20

// DefaultMaxBuffered is the unsent output an agent holds unless Config
// says; MinBuffered is the least it accepts: two full log messages.
const (
	DefaultMaxBuffered = 64 << 20
	MinBuffered        = 2 * subjects.MaxLogMsg
)

// Agent pulls and runs jobs. Create it with New and run it with Run.
type Agent struct {
	conn  *client.Conn
	js    jetstream.JetStream
	name  string
	tags  []string
	slots chan struct{}
	// ending are the jobs whose process is done and whose end is being
	// stored, off their slot (see execute): at most one per slot.
	ending chan struct{}
	dirs   *workDirs
	// lineReaders are the buffers jobs' output is read through, kept from
	// one run to the next: made for each run, a job's two (32 KiB each)
	// were most of what an agent allocated, and most of its collector's
	// work.
	lineReaders sync.Pool
	grace       time.Duration
	log         *slog.Logger

	jobs         sync.WaitGroup // executions under way
	runs         atomic.Uint64  // runs started, which name each run's cgroup
	stats        stats
	beatEvery    time.Duration
	drainTimeout time.Duration
	maxOutput    int64
	room         *budget // unsent output of all jobs
	watch        *watchdog

	// cgroups makes each job's cgroup; nil when the agent cannot, and then
	// noCgroups says why.
	cgroups   cgroupHost
	noCgroups string
	runAs     *jobUser // nil: jobs run as the agent's user
	// devNull is the stdin of jobs without one, opened once by Run (nil:
	// os/exec opens it for each job, as it would otherwise).
	devNull *os.File
	// xkey opens the secrets sealed to this agent process; its public half
	// goes out in every heartbeat. It lives in memory only: a restarted
	// agent has a new one.
	xkey    nkeys.KeyPair
	xkeyPub string

	mu      sync.Mutex
	kill    context.CancelFunc // ends the jobs' context
	running map[string]*process
	held    map[string]int         // jobs from delivery until acked or left; heartbeats list them
	taken   map[takenKey]*takenJob // the requests being handled here
	stopped map[string]pendingStop // stop requests for jobs not (yet) running here
	// connectedAt is when the agent saw its connection come back last
	// (zero: never), and seen how many reconnects it had seen by then.
	connectedAt time.Time
	seen        uint64
}

// New checks the credential and prepares an agent.
func New(cfg Config) (*Agent, error) {
	id := cfg.Conn.Identity
	if id.Role != accounts.RoleAgent {
		return nil, fmt.Errorf("the credential %q is for role %q, not agent: issue one with 'outpost admin agent add NAME --tag TAG'", id.Name, id.Role)
	}
	if len(id.Tags) == 0 {
		return nil, fmt.Errorf("the agent credential %q carries no tags", id.Name)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = DefaultMaxOutput
	}
	switch {
	case cfg.MaxBuffered == 0:
		cfg.MaxBuffered = DefaultMaxBuffered
	case cfg.MaxBuffered < MinBuffered:
		return nil, fmt.Errorf("the output buffer of %d bytes is too small: give at least %d (--max-buffer)", cfg.MaxBuffered, MinBuffered)
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.WorkDir == "" {
		// A fresh directory of our own: a predictable path in a shared /tmp
		// could be made first, and so read or redirected, by another user.
		d, err := os.MkdirTemp("", "outpost-"+id.Name+"-")
		if err != nil {
			return nil, fmt.Errorf("work directory: %w", err)
		}
		cfg.WorkDir = d
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	var runAs *jobUser
	if cfg.RunAs != "" {
		var err error
		if runAs, err = lookupUser(cfg.RunAs); err != nil {
			return nil, err
		}
		if cfg.CredsFile != "" {
			if err := unreadableBy(cfg.CredsFile, runAs); err != nil {
				return nil, fmt.Errorf("--run-as %s: jobs could read the agent's creds: %w (chmod 600 it, owned by the agent's user)", cfg.RunAs, err)
			}
		}
		// Jobs may pass through the work root to their own directory, but
		// not list it.
		if err := os.Chmod(cfg.WorkDir, 0o711); err != nil {
			return nil, fmt.Errorf("work directory: %w", err)
		}
	}
	dirs := newWorkDirs(cfg.WorkDir, runAs)
	xkey, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, fmt.Errorf("curve key for secrets: %w", err)
	}
	xkeyPub, _ := xkey.PublicKey()
	a := &Agent{
		conn: cfg.Conn, js: cfg.Conn.JS, name: id.Name, tags: slices.Clone(id.Tags),
		slots: make(chan struct{}, cfg.Concurrency), ending: make(chan struct{}, cfg.Concurrency), dirs: dirs, grace: cfg.StopGrace, drainTimeout: cfg.DrainTimeout, maxOutput: cfg.MaxOutput, beatEvery: cfg.Heartbeat,
		room:    newBudget(cfg.MaxBuffered),
		log:     cfg.Logger.With("agent", id.Name),
		running: map[string]*process{}, held: map[string]int{}, taken: map[takenKey]*takenJob{}, stopped: map[string]pendingStop{}, runAs: runAs,
		xkey: xkey, xkeyPub: xkeyPub, lineReaders: sync.Pool{New: func() any { return newLineReader() }},
	}
	cg, err := newCgroups(id.Name, cfg.Cgroups)
	if err != nil {
		a.noCgroups = err.Error()
	} else {
		a.cgroups = cg
	}
	return a, nil
}

// Tags are the pools this agent serves, as its credential says.
func (a *Agent) Tags() []string { return slices.Clone(a.tags) }

// Run pulls and runs jobs until ctx ends. Then it drains: it stops
// pulling and lets running jobs finish for up to Config.DrainTimeout (or
// until StopJobs), kills what is still running and hands those jobs back to
// the queue at once, as their next attempt.
func (a *Agent) Run(ctx context.Context) error {
	pullCtx, stopPulling := context.WithCancel(ctx)
	defer stopPulling()
	jobCtx, killJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer killJobs()
	a.mu.Lock()
	a.kill = killJobs
	a.mu.Unlock()
	if f, err := os.Open(os.DevNull); err == nil {
		a.devNull = f
		defer f.Close()
	}
	if w, err := startWatchdog(); err != nil {
		a.log.Warn("no watchdog: what a job leaves running may outlive this agent if it dies", "err", err)
	} else {
		a.watch = w
		defer w.stop()
		if a.cgroups != nil {
			w.cgroups(a.cgroups.jobsDir())
		}
	}
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for _, tag := range a.tags {
		s, err := a.conn.Subscribe(subjects.ControlFilter(tag), a.onControl)
		if err != nil {
			return fmt.Errorf("subscribe to stop requests of tag %s: %w", tag, err)
		}
		subs = append(subs, s)
	}
	var pullers sync.WaitGroup
	errc := make(chan error, len(a.tags))
	for _, tag := range a.tags {
		pullers.Add(1)
		go func() {
			defer pullers.Done()
			if err := a.pull(pullCtx, jobCtx, tag); err != nil {
				errc <- err
			}
		}()
	}
	beating := make(chan struct{})
	go func() { defer close(beating); a.heartbeat(jobCtx) }()
	if a.cgroups != nil {
		defer a.cgroups.close()
		a.log.Info("agent ready", "tags", a.tags, "concurrency", cap(a.slots), "cgroups", a.cgroups.version())
	} else {
		a.log.Warn("cannot make cgroups: jobs run without them, and jobs that ask for limits go back to the queue for another agent", "reason", a.noCgroups)
		a.log.Info("agent ready", "tags", a.tags, "concurrency", cap(a.slots), "cgroups", "none")
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	case <-a.conn.Revoked():
		err = fmt.Errorf("agent %s: %w; its jobs go to other agents of its tags", a.name, ErrRevoked)
		killJobs()
	}
	stopPulling()
	pullers.Wait()
	if err == nil && jobCtx.Err() == nil {
		a.drain(jobCtx)
	}
	killJobs()
	a.jobs.Wait()
	a.dirs.close()
	<-beating
	return err
}

// drain waits for the running jobs to end, at most DrainTimeout, or until
// StopJobs ends the wait.
func (a *Agent) drain(jobCtx context.Context) {
	done := make(chan struct{})
	go func() { a.jobs.Wait(); close(done) }()
	a.mu.Lock()
	n := len(a.running)
	a.mu.Unlock()
	if n > 0 {
		a.log.Info("draining: no new jobs; waiting for the running ones", "running", n, "timeout", a.drainTimeout)
	}
	select {
	case <-done:
	case <-time.After(a.drainTimeout):
		a.log.Warn("drain timeout: stopping the jobs still running; they go back to the queue")
	case <-jobCtx.Done():
	}
}

// StopJobs kills every running job and ends a drain at once; the jobs go
// back to the queue as their next attempt. It is what a second SIGTERM does.
func (a *Agent) StopJobs() {
	a.mu.Lock()
	kill := a.kill
	a.mu.Unlock()
	if kill != nil {
		kill()
	}
}

// pullWait is how long one pull request waits for a job. The server scans
// every waiting request of a consumer each time one arrives or expires, so
// the cost of a tag's idle agents grows with their number squared over
// this wait: a long wait keeps a thousand idle agents cheap. A request the
// server lost meanwhile (a reconnect, a restarted server) is replaced at
// once on reconnecting, so the wait never leaves an agent deaf. (OUTPOST's
// pull export keeps a reply path open longer than this: accounts package.)
const pullWait = 5 * time.Minute

const (
	// pullProbe is the wait of the first pull after a start, a reconnect
	// or an error: short, in case the server dropped it.
	pullProbe = 2 * time.Second
	// pullRetry is the pause after a pull that failed (no consumer yet, no
	// connection) before the next.
	pullRetry = 2 * time.Second
	// defaultAckWait is the coordinator's default, for a job request that
	// does not say.
	defaultAckWait = 30 * time.Second
	// refuseDelay is how long a job this agent cannot run (limits it
	// cannot enforce, secrets it cannot open) waits before it is offered
	// again, so that another agent of the tag may take it.
	refuseDelay = 2 * time.Second
)

// pullBatch is how many jobs a pull asks for: as many as there are free
// slots, up to MaxPullBatch, for an agent of one tag; one pull at a time
// for one job left a busy agent's slots to fill a round trip apart. An
// agent of several tags asks for one: its tags share the slots, and of
// jobs that came for slots another tag took, only the one being handed a
// slot is kept alive with InProgress; the others would wait out their ack
// wait in the subscription's queue and be delivered again meanwhile.
func (a *Agent) pullBatch() int {
	if len(a.tags) > 1 {
		return 1
	}
	return min(MaxPullBatch, max(1, cap(a.slots)-len(a.slots)))
}

// MaxPullBatch is the most jobs an agent asks for in one pull: its
// connection's sync subscriptions must queue at least that many (nats.go
// drops what overflows one).
const MaxPullBatch = 64

// pull takes jobs of one tag whenever a slot is free. It waits for a free
// slot before it asks, and takes the slot once a job arrives, so several
// tags share the slots without one starving another; a job that arrives
// when another tag took the last slot waits, kept alive by InProgress.
func (a *Agent) pull(ctx, jobCtx context.Context, tag string) error {
	puller, err := a.conn.NewPuller(subjects.JobsStream, subjects.AgentsConsumer(tag))
	if err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	defer puller.Close()
	reconnected := a.conn.StatusChanged(nats.CONNECTED)
	defer a.conn.RemoveStatusListener(reconnected)
	probe := true
	for ctx.Err() == nil {
		select {
		case a.slots <- struct{}{}:
			<-a.slots
		case <-ctx.Done():
			return nil
		}
		// A pull request that a reconnect leaves waiting at the server
		// would take the next job for no one (its reply finds no inbox),
		// and the job would wait out its ack wait. So pull only while
		// connected, and give a pull up only for a reconnect after it was
		// sent, not for one before whose news comes late.
		if !a.waitConnected(ctx) {
			return nil
		}
		sent := a.conn.Stats().Reconnects
		pctx, cancel := context.WithCancel(ctx)
		pulled := make(chan struct{})
		go func() {
			for {
				select {
				case <-reconnected:
					if a.conn.Stats().Reconnects != sent {
						cancel()
						return
					}
				case <-pulled:
					return
				}
			}
		}()
		// A pull request that reaches a server not yet serving the
		// consumer (just restarted) is dropped without a word when it
		// crosses accounts, so after a start, a reconnect or an error the
		// first pull is short: once the server answers one, it is
		// listening, and the long waits begin.
		wait := pullWait
		if probe {
			wait = pullProbe
		}
		_, err := puller.Pull(pctx, a.pullBatch(), wait, func(m *nats.Msg) error {
			ackWait := jobAckWait(m)
			if !a.takeSlot(ctx, m, ackWait) {
				_ = m.Nak()
				return nil
			}
			a.jobs.Add(1)
			go func() {
				defer a.jobs.Done()
				free := sync.OnceFunc(func() { <-a.slots })
				defer free()
				a.execute(jobCtx, m, ackWait, free)
			}()
			return nil
		})
		close(pulled)
		reconnect := pctx.Err() != nil
		cancel()
		probe = err != nil
		if err == nil || ctx.Err() != nil || reconnect {
			continue // a job, the end, or a reconnect: ask again at once
		}
		if d := a.conn.Denied(); d != nil {
			return fmt.Errorf("tag %s: %w", tag, d)
		}
		a.log.Warn("could not pull a job (is the coordinator running?)", "tag", tag, "err", err)
		select {
		case <-time.After(pullRetry):
		case <-ctx.Done():
		}
	}
	return nil
}

// waitConnected waits until the connection is up, and reports false if
// ctx ended first.
func (a *Agent) waitConnected(ctx context.Context) bool { return waitUntil(ctx, a.conn.IsConnected) }

// waitUntil polls cond until it holds, and reports false if ctx ended
// first. nats.go tells of a reconnect only to listeners registered
// beforehand, and a poll this slow costs nothing.
func waitUntil(ctx context.Context, cond func() bool) bool {
	for !cond() {
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func (a *Agent) takeSlot(ctx context.Context, m *nats.Msg, ackWait time.Duration) bool {
	t := time.NewTicker(ackWait / 3)
	defer t.Stop()
	for {
		select {
		case a.slots <- struct{}{}:
			return true
		case <-t.C:
			_ = m.InProgress()
		case <-ctx.Done():
			return false
		}
	}
}

// onControl obeys a stop request, but only one from the coordinator: the
// reply subject must lie in the coordinator's inbox and the subject must
// have the exact shape, or it is a stream message redirected here.
func (a *Agent) onControl(m *nats.Msg) {
	tag, id, err := subjects.ParseControl(m.Subject)
	if err != nil || !subjects.InInbox(m.Reply, subjects.CoordinatorName) || !slices.Contains(a.tags, tag) {
		a.log.Warn("ignored control message", "subject", m.Subject, "reply", m.Reply)
		return
	}
	var c subjects.ControlMsg
	if err := json.Unmarshal(m.Data, &c); err != nil || c.Job != id || c.Action != subjects.ActionStop {
		a.log.Warn("ignored malformed control message", "subject", m.Subject)
		return
	}
	grace := time.Duration(c.Grace)
	if grace <= 0 {
		grace = a.grace
	}
	if c.Force {
		grace = 0
	}
	a.mu.Lock()
	p := a.running[id]
	if p == nil {
		a.stopped[id] = pendingStop{at: time.Now(), grace: grace}
	}
	a.mu.Unlock()
	if p != nil {
		a.log.Info("stopping job", "job", id, "grace", grace)
		p.stop(subjects.StateStopped, grace)
	}
}

// pendingStop is a stop request for a job whose process is not here (yet).
type pendingStop struct {
	at    time.Time
	grace time.Duration
}

// wasStopped reports, and forgets, a stop request that came before the job.
func (a *Agent) wasStopped(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.takeStopLocked(id)
	return ok
}

// takeStopLocked returns and forgets a pending stop request for id, and
// prunes old ones. The caller holds a.mu.
func (a *Agent) takeStopLocked(id string) (pendingStop, bool) {
	for k, ps := range a.stopped {
		if time.Since(ps.at) > 10*time.Minute {
			delete(a.stopped, k)
		}
	}
	ps, ok := a.stopped[id]
	delete(a.stopped, id)
	return ps, ok
}

// idleBeats is how many of its beats an agent with nothing in hand and
// nothing new to tell lets pass between announcements. The coordinator
// pays for every heartbeat of every agent (it crosses accounts into
// OUTPOST), and most agents of a fleet are idle most of the time.
const idleBeats = 3

// heartbeat announces the agent on each of its tags: every beatEvery while
// it holds a job, or when something it tells has changed, and otherwise
// every idleBeats beats (beatDue). It beats at once when it starts and when
// it reconnects, and again on the next tick after a reconnect: the
// coordinator of a restarted server may not listen yet.
func (a *Agent) heartbeat(ctx context.Context) {
	t := time.NewTicker(a.beatEvery)
	defer t.Stop()
	reconnected := a.conn.StatusChanged(nats.CONNECTED)
	defer a.conn.RemoveStatusListener(reconnected)
	var last subjects.HeartbeatMsg
	quiet, forced := 0, 1
	for {
		a.mu.Lock()
		// Lines before bytes (fields are read in order): see batcher.flush.
		hb := subjects.HeartbeatMsg{Agent: a.name, Tags: a.tags, Slots: cap(a.slots), At: time.Now().UTC(),
			Lines: a.stats.lines.Load(), Bytes: a.stats.bytes.Load(), NoCgroups: a.noCgroups, XKey: a.xkeyPub}
		if a.cgroups != nil {
			hb.Cgroups = a.cgroups.version()
		}
		// Every job in hand, from delivery until its terminal status is
		// stored: the coordinator requeues a running job its agent does
		// not list.
		for id := range a.held {
			hb.Running = append(hb.Running, id)
		}
		a.mu.Unlock()
		hb.Every = subjects.Duration(idleBeats * a.beatEvery)
		if len(hb.Running) > 0 {
			hb.Every = subjects.Duration(a.beatEvery)
		}
		quiet++
		if forced > 0 || beatDue(hb, last, quiet) {
			b, _ := json.Marshal(hb)
			for _, tag := range a.tags {
				if err := a.conn.Publish(subjects.HeartbeatSubject(tag, a.name), b); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
					a.log.Debug("heartbeat", "err", err)
				}
			}
			last, quiet, forced = hb, 0, max(forced-1, 0)
		}
		select {
		case <-t.C:
		case <-reconnected:
			forced = 2
		case <-ctx.Done():
			return
		}
	}
}

// beatDue reports whether a tick's heartbeat hb goes out, given the last
// one sent and the ticks since it (this one counted). The coordinator
// counts the beats of an agent that holds a job, so such an agent beats on
// every tick, as it does once it has let go of its last one, or when its
// log totals moved; an idle agent with nothing new beats every idleBeats
// ticks. Its At, which always moves, is no news.
func beatDue(hb, last subjects.HeartbeatMsg, quiet int) bool {
	return quiet >= idleBeats || len(hb.Running) > 0 || len(last.Running) > 0 ||
		hb.Lines != last.Lines || hb.Bytes != last.Bytes
}

// hold marks a job as in hand until the returned func is called.
func (a *Agent) hold(id string) func() {
	a.mu.Lock()
	a.held[id]++
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.held[id]--; a.held[id] <= 0 {
			delete(a.held, id)
		}
	}
}
