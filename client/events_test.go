package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

const ghost = "01jd7x3k9q8r6t5v4w3y2z1a0b" // a job ID no record has

type site struct {
	env             *testenv.Env
	alice, bob, obs *client.Conn
	agentA          *client.Conn
	agentCredsA     string
}

func newSite(t *testing.T) *site {
	t.Helper()
	env := testenv.New(t)
	env.StartCoordinator(coordinator.Limits{})
	s := &site{env: env, agentCredsA: env.Creds(accounts.RoleAgent, "agent-a", "a")}
	s.agentA = env.Dial(s.agentCredsA)
	s.alice = env.Dial(env.Creds(accounts.RoleUser, "alice", "a"))
	s.bob = env.Dial(env.Creds(accounts.RoleUser, "bob", "a"))
	s.obs = env.Dial(env.Creds(accounts.RoleObserver, "obs", "a"))
	return s
}

// history is what a read handed over, in order: "status:<state>" and
// "<stream>:<seq>:<data>" items.
type history []string

func (h *history) add(e client.Event) error {
	if e.Status != nil {
		*h = append(*h, "status:"+string(e.Status.State))
		return nil
	}
	*h = append(*h, fmt.Sprintf("%s:%d:%s", e.Log.Stream, e.Log.Seq, e.Log.Data))
	return nil
}

// store publishes a job's events as its agent would, in the order given.
func (s *site) store(t *testing.T, job string, items ...any) {
	t.Helper()
	ctx := testenv.Context(t)
	for _, it := range items {
		var m *nats.Msg
		switch v := it.(type) {
		case subjects.State:
			m = nats.NewMsg(subjects.EventSubject("a", "alice", job, subjects.KindStatus))
			m.Data, _ = json.Marshal(subjects.StatusEvent{Job: job, State: v, Attempt: 1})
		case logMsg:
			m = nats.NewMsg(subjects.EventSubject("a", "alice", job, subjects.KindLog))
			m.Data = []byte(v.data)
			m.Header.Set(subjects.HeaderStream, subjects.StreamStdout)
			m.Header.Set(subjects.HeaderAttempt, "1")
			m.Header.Set(subjects.HeaderSeq, strconv.Itoa(v.seq))
		}
		if _, err := s.agentA.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
}

type logMsg struct {
	seq  int
	data string
}

// Lines stored out of order (a retried publish stored late) and twice are
// handed over once each, in line order, before the terminal status.
func TestReadEventsReorders(t *testing.T) {
	s := newSite(t)
	s.store(t, ghost,
		subjects.StateQueued, subjects.StateRunning,
		logMsg{3, "c\nd\n"}, logMsg{1, "a\n"}, logMsg{3, "c\nd\n"}, logMsg{2, "b\n"}, logMsg{1, "a\n"}, logMsg{5, "e\n"},
		subjects.StateSucceeded)
	var h history
	if err := s.alice.ReadEvents(testenv.Context(t), ghost, client.ReadOptions{}, h.add); err != nil {
		t.Fatal(err)
	}
	want := "status:queued|status:running|stdout:1:a\n|stdout:2:b\n|stdout:3:c\nd\n|stdout:5:e\n|status:succeeded"
	if got := strings.Join(h, "|"); got != want {
		t.Errorf("handed over\n%q\nwant\n%q", got, want)
	}
	assertNoReaders(t, s, "alice")
}

// A line held back by a gap is handed over before the terminal status.
func TestReadEventsFlushesAtTheEnd(t *testing.T) {
	s := newSite(t)
	s.store(t, ghost, subjects.StateRunning, logMsg{1, "a\n"}, logMsg{3, "c\n"}, subjects.StateFailed)
	var h history
	if err := s.alice.ReadEvents(testenv.Context(t), ghost, client.ReadOptions{}, h.add); err != nil {
		t.Fatal(err)
	}
	want := "status:running|stdout:1:a\n|stdout:3:c\n|status:failed"
	if got := strings.Join(h, "|"); got != want {
		t.Errorf("handed over %q, want %q", got, want)
	}
}

func TestReadEventsNoEvents(t *testing.T) {
	s := newSite(t)
	err := s.alice.ReadEvents(testenv.Context(t), ghost, client.ReadOptions{}, func(client.Event) error {
		t.Error("an event of an unknown job")
		return nil
	})
	if !errors.Is(err, client.ErrNoEvents) {
		t.Errorf("unknown job: %v", err)
	}
	// Another user's job looks just the same.
	s.store(t, ghost, subjects.StateQueued)
	if err := s.bob.ReadEvents(testenv.Context(t), ghost, client.ReadOptions{}, func(client.Event) error {
		t.Error("bob read alice's event")
		return nil
	}); !errors.Is(err, client.ErrNoEvents) {
		t.Errorf("another user's job: %v", err)
	}
	// An observer of the tag sees it.
	var h history
	if err := s.obs.ReadEvents(testenv.Context(t), ghost, client.ReadOptions{}, h.add); err != nil || len(h) != 1 {
		t.Errorf("observer read %v, %v", h, err)
	}
	if err := s.alice.ReadEvents(testenv.Context(t), "not-a-job", client.ReadOptions{}, nil); !errors.Is(err, subjects.ErrBadToken) {
		t.Errorf("bad ID: %v", err)
	}
	assertNoReaders(t, s, "alice", "bob", "obs")
}

// Each reader holds one of ReaderSlots consumers pinned to its name while
// it reads, and frees it after.
func TestReaderSlots(t *testing.T) {
	s := newSite(t)
	s.store(t, ghost, subjects.StateQueued, logMsg{1, "a\n"}, subjects.StateSucceeded)
	ctx := testenv.Context(t)
	// Four readers elsewhere hold every slot.
	for slot := 1; slot <= subjects.ReaderSlots; slot++ {
		_, err := s.env.CoordConn.JS.CreateConsumer(ctx, subjects.EventsStream, jetstream.ConsumerConfig{
			Name: subjects.ReaderConsumer("alice", slot), FilterSubject: "outpost.ev.*.alice.>",
			AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute,
		})
		if err != nil {
			t.Fatalf("slot %d: %v", slot, err)
		}
	}
	err := s.alice.ReadEvents(ctx, ghost, client.ReadOptions{}, func(client.Event) error { return nil })
	if apiErr := (*subjects.Error)(nil); !errors.As(err, &apiErr) || apiErr.Code != subjects.CodeConflict {
		t.Fatalf("with every slot taken: %v", err)
	}
	// Bob's slots are his own.
	if err := s.bob.ReadEvents(ctx, ghost, client.ReadOptions{}, func(client.Event) error { return nil }); !errors.Is(err, client.ErrNoEvents) {
		t.Errorf("bob: %v", err)
	}
	// One slot frees up; a read takes it and frees it again.
	freed := subjects.ReaderConsumer("alice", 3)
	if err := s.env.CoordConn.JS.DeleteConsumer(ctx, subjects.EventsStream, freed); err != nil {
		t.Fatal(err)
	}
	var h history
	var during []string
	err = s.alice.ReadEvents(ctx, ghost, client.ReadOptions{}, func(e client.Event) error {
		if len(h) == 0 {
			during = readers(t, s)
		}
		return h.add(e)
	})
	if err != nil || len(h) != 3 {
		t.Fatalf("read %v, %v", h, err)
	}
	if !contains(during, freed) {
		t.Errorf("while reading, the consumers were %v; want %s among them", during, freed)
	}
	after := readers(t, s)
	if contains(after, freed) || len(after) != subjects.ReaderSlots-1 {
		t.Errorf("after the read the consumers are %v: %s was not freed, or another was touched", after, freed)
	}
}

// Two reads of the same job by the same reader at once each get every
// event, each through its own slot.
func TestConcurrentReadsOfOneJob(t *testing.T) {
	s := newSite(t)
	var items []any
	items = append(items, subjects.StateQueued, subjects.StateRunning)
	for i := 1; i <= 200; i++ {
		items = append(items, logMsg{i, fmt.Sprintf("line %d\n", i)})
	}
	items = append(items, subjects.StateSucceeded)
	s.store(t, ghost, items...)
	ctx := testenv.Context(t)

	var first history
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		n := 0
		done <- s.alice.ReadEvents(ctx, ghost, client.ReadOptions{}, func(e client.Event) error {
			if n++; n == 1 {
				close(started)
				<-release // the first read stalls after its first event
			}
			return first.add(e)
		})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("first read: %v", err)
	}
	var second history
	err := s.alice.ReadEvents(ctx, ghost, client.ReadOptions{}, second.add)
	close(release)
	if err != nil {
		t.Errorf("second read: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("first read: %v", err)
	}
	for name, h := range map[string]history{"first": first, "second": second} {
		if len(h) != len(items) {
			t.Errorf("%s read got %d of %d events", name, len(h), len(items))
		}
	}
	assertNoReaders(t, s, "alice")
}

// Follow hands over lines as the job prints them and ends with the job.
func TestReadEventsFollow(t *testing.T) {
	s := newSite(t)
	id, open := s.submitGated(t, "echo two >&2; exit 4")
	var h history
	err := s.alice.ReadEvents(testenv.Context(t), id, client.ReadOptions{Follow: true}, func(e client.Event) error {
		if e.Log != nil && string(e.Log.Data) == "one\n" {
			open() // only now may the job go on: the line came live
		}
		if e.Log != nil && string(e.Log.Data) == "two\n" {
			// What is stored was replayed; the rest comes live.
			if r := readers(t, s); len(r) > 0 {
				t.Errorf("a follow holds reader consumers %v past its replay", r)
			}
		}
		return h.add(e)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "status:queued|status:running|stdout:1:one\n|stderr:2:two\n|status:failed"
	if got := strings.Join(h, "|"); got != want {
		t.Errorf("followed %q, want %q", got, want)
	}
	assertNoReaders(t, s, "alice")
}

// gated is a job of tag a that prints "one", then waits for open (called
// once or more) before it runs the shell commands rest.
func gated(t *testing.T, rest string) (spec subjects.JobSpec, open func()) {
	dir := t.TempDir()
	var once sync.Once
	return subjects.JobSpec{Tag: "a", Dir: dir, Command: []string{"sh", "-c", "echo one; while [ ! -e go ]; do sleep 0.01; done; " + rest}},
		func() {
			once.Do(func() {
				if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
					t.Error(err)
				}
			})
		}
}

// submitGated starts an agent of tag a and submits a gated job as alice.
func (s *site) submitGated(t *testing.T, rest string) (id string, open func()) {
	t.Helper()
	s.env.StartAgent(s.agentCredsA, agent.Config{})
	spec, open := gated(t, rest)
	r, err := s.alice.Submit(testenv.Context(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	return r.ID, open
}

func readers(t *testing.T, s *site) []string {
	t.Helper()
	ctx := testenv.Context(t)
	st, err := s.env.CoordConn.JS.Stream(ctx, subjects.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	names := st.ConsumerNames(ctx)
	for n := range names.Name() {
		if strings.HasPrefix(n, "r_") {
			out = append(out, n)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func assertNoReaders(t *testing.T, s *site, names ...string) {
	t.Helper()
	for _, c := range readers(t, s) {
		for _, n := range names {
			if strings.HasPrefix(c, "r_"+n+"_") {
				t.Errorf("reader consumer %s left behind", c)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestFollowSurvivesServerRestart: a restarted server may have lost the
// follower's reader consumer. The follower goes on from the event after
// the last it handed over, and misses nothing and repeats nothing.
func TestFollowSurvivesServerRestart(t *testing.T) {
	s := newSite(t)
	const job = "01jd7x3k9q8r6t5v4w3y2z1a0c"
	s.store(t, job, subjects.StateQueued, subjects.StateRunning, logMsg{1, "before\n"})
	var (
		mu sync.Mutex
		h  history
	)
	seen := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(h)
	}
	done := make(chan error, 1)
	go func() {
		done <- s.alice.ReadEvents(testenv.Context(t), job, client.ReadOptions{Follow: true}, func(e client.Event) error {
			mu.Lock()
			defer mu.Unlock()
			return h.add(e)
		})
	}()
	testenv.Eventually(t, "the follower to see the events so far", func() bool { return seen() == 3 })
	s.env.RestartServer()
	testenv.Eventually(t, "the agent to reconnect", s.agentA.IsConnected)
	s.store(t, job, logMsg{2, "after\n"}, subjects.StateSucceeded)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follow across a restart: %v", err)
		}
	case <-time.After(testenv.Timeout):
		t.Fatal("the follower did not see the job end after the restart")
	}
	want := "status:queued status:running stdout:1:before\n stdout:2:after\n status:succeeded"
	if got := strings.Join(h, " "); got != want {
		t.Errorf("followed %q, want %q", got, want)
	}
}

// TestRunFollowsLive: Run hands over a job's events as a follow would,
// from its live subjects: no reader consumer is made while it runs, and
// lines printed while the job waits arrive before it ends.
func TestRunFollowsLive(t *testing.T) {
	s := newSite(t)
	s.env.StartAgent(s.agentCredsA, agent.Config{})
	spec, open := gated(t, "echo two >&2; exit 4")
	var (
		h    history
		made []string // reader consumers there when the job ended
	)
	rec, err := s.alice.Run(testenv.Context(t), spec, client.RunOptions{}, func(e client.Event) error {
		if e.Log != nil && string(e.Log.Data) == "one\n" {
			open()
		}
		if e.Status != nil && e.Status.State.Terminal() {
			made = readers(t, s)
		}
		return h.add(e)
	})
	if err != nil || rec == nil {
		t.Fatal(rec, err)
	}
	want := "status:queued|status:running|stdout:1:one\n|stderr:2:two\n|status:failed"
	if got := strings.Join(h, "|"); got != want {
		t.Errorf("ran %q, want %q", got, want)
	}
	if len(made) > 0 || audited(t, s, "alice", subjects.VerbRead) {
		t.Errorf("a reader consumer was made (%v there at the end) for a run that missed nothing live", made)
	}
}

// TestRunCatchesUpAfterAReconnect: live events sent while the connection
// was down are lost to it, so after a reconnect each Run catches up from
// the job's stored events and goes on live, and hands over each line
// once. More runs than the caller has reader slots catch up at once: a
// catch-up holds its slot only while it replays.
func TestRunCatchesUpAfterAReconnect(t *testing.T) {
	s := newSite(t)
	const runs = subjects.ReaderSlots + 2
	s.env.StartAgent(s.agentCredsA, agent.Config{Concurrency: runs})
	var arrived sync.WaitGroup
	arrived.Add(runs)
	restarted := make(chan struct{})
	errs := make(chan error, runs)
	for range runs {
		spec, open := gated(t, "echo two; echo three")
		go func() {
			var h history
			_, err := s.alice.Run(testenv.Context(t), spec, client.RunOptions{}, func(e client.Event) error {
				if e.Log != nil && string(e.Log.Data) == "one\n" {
					arrived.Done()
					<-restarted
					open()
				}
				return h.add(e)
			})
			want := "status:queued|status:running|stdout:1:one\n|stdout:2:two\nthree\n|status:succeeded"
			if got := strings.Join(h, "|"); err == nil && got != want && got != strings.Replace(want, "two\nthree", "two\n|stdout:3:three", 1) {
				err = fmt.Errorf("ran %q, want one, two and three once each", got)
			}
			errs <- err
		}()
	}
	arrived.Wait()
	s.env.RestartServer()
	testenv.Eventually(t, "alice to reconnect", s.alice.IsConnected)
	close(restarted)
	for range runs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	testenv.Eventually(t, "the catch-ups' reads in the audit trail", func() bool { return audited(t, s, "alice", subjects.VerbRead) })
}

// audited says whether the audit trail holds a call of verb by name.
func audited(t *testing.T, s *site, name, verb string) bool {
	t.Helper()
	ctx := testenv.Context(t)
	st, err := s.env.CoordConn.JS.Stream(ctx, subjects.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.GetLastMsgForSubject(ctx, subjects.AuditSubject(name, verb))
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// TestRunReplaysAnEndWithoutACount: a terminal status that counts no
// lines (here the coordinator's, for a job stopped before any agent took
// it) cannot be checked against what came live, so Run replays.
func TestRunReplaysAnEndWithoutACount(t *testing.T) {
	s := newSite(t)
	ctx := testenv.Context(t)
	var (
		h        history
		replayed bool
	)
	_, err := s.alice.Run(ctx, subjects.JobSpec{Tag: "a", Command: []string{"true"}}, client.RunOptions{}, func(e client.Event) error {
		if e.Status != nil && e.Status.State == subjects.StateQueued {
			if _, err := s.alice.Stop(ctx, subjects.StopRequest{ID: e.Status.Job}); err != nil {
				return err
			}
		}
		if e.Status != nil && e.Status.State.Terminal() {
			replayed = len(readers(t, s)) > 0
		}
		return h.add(e)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(h, "|"), "status:queued|status:stopped"; got != want {
		t.Errorf("ran %q, want %q", got, want)
	}
	if !replayed {
		t.Error("Run took an end without a line count as complete")
	}
}

// TestRunSeesQuickJobsEnd: a job that ends while its submit's reply is on
// the way has its events come on the tag-wide live subscription; none may
// be lost when Run narrows it to the job.
func TestRunSeesQuickJobsEnd(t *testing.T) {
	s := newSite(t)
	s.env.StartAgent(s.agentCredsA, agent.Config{Concurrency: 4})
	ctx := testenv.Context(t)
	for i := range 40 {
		var h history
		if _, err := s.alice.Run(ctx, subjects.JobSpec{Tag: "a", Command: []string{"echo", "hi"}}, client.RunOptions{}, h.add); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if got, want := strings.Join(h, "|"), "status:queued|status:running|stdout:1:hi\n|status:succeeded"; got != want {
			t.Fatalf("run %d: %q, want %q", i, got, want)
		}
	}
}

// TestRunSharesItsLiveSubscription: the Runs of a connection share one
// subscription to a tag's live events, also back to back, and it goes a
// while after the last of them, also when their context has no deadline,
// as the CLI's has not.
func TestRunSharesItsLiveSubscription(t *testing.T) {
	s := newSite(t)
	s.env.StartAgent(s.agentCredsA, agent.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := s.alice.Get(testenv.Context(t), ghost); err == nil {
		t.Fatal("a ghost job has a record")
	}
	base := s.alice.NumSubscriptions() // the request multiplexer's inbox
	for range 2 {
		spec, open := gated(t, "true")
		_, err := s.alice.Run(ctx, spec, client.RunOptions{}, func(e client.Event) error {
			if e.Log != nil {
				if n := s.alice.NumSubscriptions(); n != base+1 {
					t.Errorf("%d subscriptions while a Run follows its job, want %d", n, base+1)
				}
				if r := readers(t, s); len(r) > 0 {
					t.Errorf("Run reads through %v instead of following live", r)
				}
				open()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, "the live subscription to go after its last Run", func() bool { return s.alice.NumSubscriptions() == base })
}

// TestConcurrentRunsShareALiveSubscription: Runs of one connection whose
// submits overlap each get their own job's events, whole, from the live
// subscription they share, without a catch-up.
func TestConcurrentRunsShareALiveSubscription(t *testing.T) {
	s := newSite(t)
	s.env.StartAgent(s.agentCredsA, agent.Config{Concurrency: 4})
	ctx := testenv.Context(t)
	const runners, each = 6, 5
	errs := make(chan error, runners)
	for i := range runners {
		go func() {
			for j := range each {
				var h history
				word := fmt.Sprintf("r%dj%d", i, j)
				if _, err := s.alice.Run(ctx, subjects.JobSpec{Tag: "a", Command: []string{"echo", word}}, client.RunOptions{}, h.add); err != nil {
					errs <- err
					return
				}
				if got, want := strings.Join(h, "|"), "status:queued|status:running|stdout:1:"+word+"\n|status:succeeded"; got != want {
					errs <- fmt.Errorf("run %s: %q, want %q", word, got, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range runners {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if audited(t, s, "alice", subjects.VerbRead) {
		t.Error("a Run caught up, though nothing was lost")
	}
}

// TestTwoFollowsOfOneJob: two follows of one job on one connection share
// its live subscription, and each gets every event.
func TestTwoFollowsOfOneJob(t *testing.T) {
	s := newSite(t)
	id, open := s.submitGated(t, "echo two")
	hs := make([]history, 2)
	errs := make(chan error, 2)
	ready := make(chan struct{}, 2)
	for i := range hs {
		go func() {
			var once sync.Once
			errs <- s.alice.ReadEvents(testenv.Context(t), id, client.ReadOptions{Follow: true}, func(e client.Event) error {
				if e.Log != nil {
					once.Do(func() { ready <- struct{}{} })
				}
				return hs[i].add(e)
			})
		}()
	}
	for range hs { // both have read "one"
		select {
		case <-ready:
		case err := <-errs:
			t.Fatalf("a follow ended before the job went on: %v", err)
		case <-time.After(testenv.Timeout):
			t.Fatal("the follows did not read the job's first line")
		}
	}
	open()
	for range hs {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(testenv.Timeout):
			t.Fatal("a follow did not end with its job")
		}
	}
	want := "status:queued|status:running|stdout:1:one\n|stdout:2:two\n|status:succeeded"
	for i, h := range hs {
		if got := strings.Join(h, "|"); got != want {
			t.Errorf("follow %d: %q, want %q", i, got, want)
		}
	}
}
