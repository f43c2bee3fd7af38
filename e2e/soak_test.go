//go:build linux

package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

// soakConfig sizes a soak run.
type soakConfig struct {
	name               string
	jobs               int
	agents             int
	concurrency        int
	minLines, maxLines int
	// ackWait is the consumer's: how long a SIGKILLed agent's jobs wait
	// before another agent gets them. It must outlast the network cut.
	ackWait time.Duration
	cut     time.Duration
	kills   int
	// followers of the jobs are submitted with client.Run, as 'outpost run'
	// does, spread over the run, and followed through every fault.
	followers int
	// crash restarts the server with SIGKILL; without it, with SIGTERM.
	// After a crash a server may come back with consumer state older than
	// the truth, and lose track of a delivered job (see the report of
	// issue 4): the small soak, which CI runs, restarts it cleanly.
	crash   bool
	timeout time.Duration // for the jobs to end after the last fault
}

var (
	// smallSoak runs with every 'make test'.
	smallSoak = soakConfig{name: "small", jobs: 200, agents: 4, concurrency: 2, minLines: 20, maxLines: 100,
		ackWait: 12 * time.Second, cut: 3 * time.Second, kills: 2, followers: 4, timeout: 40 * time.Second}
	// fullSoak is 'make soak' (OUTPOST_SOAK=1).
	fullSoak = soakConfig{name: "full", jobs: 2000, agents: 4, concurrency: 4, minLines: 20, maxLines: 300,
		ackWait: 30 * time.Second, cut: 10 * time.Second, kills: 6, followers: 20, crash: true, timeout: 10 * time.Minute}
)

// soakJob prints "$NAME line 1" to "$NAME line $N", a few at a time, and
// leaves a child running in its process group, which must die with the
// job, or with its agent.
const soakJob = `sleep 600 >/dev/null 2>&1 &
i=1
while [ "$i" -le "$N" ]; do
  echo "$NAME line $i"
  if [ $((i % 5)) -eq 0 ]; then sleep 0.02; fi
  i=$((i + 1))
done
`

// TestSoak runs many jobs across four agents while agents are SIGKILLed
// at random, the coordinator is SIGKILLed and restarted, the NATS server
// is SIGKILLed and restarted, and the network of one agent, which runs in
// a namespace of its own behind NAT, is cut. Then it checks every job:
// one terminal state, every line stored once and in order, and no process
// of any job left behind. OUTPOST_SOAK=1 runs the full size ('make soak');
// otherwise a small one runs.
func TestSoak(t *testing.T) {
	requireNATSTools(t)
	cfg := smallSoak
	if os.Getenv("OUTPOST_SOAK") == "1" {
		cfg = fullSoak
	}
	h := newSoak(t, cfg)
	h.submitAll()
	h.faults()
	h.waitAll()
	h.check()
}

type soakAgent struct {
	name, creds, work string
	inSite            bool
	proc              *proc
	past              []*proc // its earlier processes, killed
}

// kill is an agent SIGKILL: when, and which agent.
type kill struct {
	at    time.Time
	agent string
}

type soak struct {
	t     *testing.T
	cfg   soakConfig
	run   string // marks every process of this run's jobs
	rng   *rand.Rand
	dir   string
	site  *site // nil when no namespace could be made
	noNAT string
	srv   *stockServer
	c     *coord
	api   *client.Conn
	agent []*soakAgent

	ids   []string
	want  map[string][]string
	kills []kill

	mu    sync.Mutex
	ended map[string]bool // jobs whose terminal status was seen

	following sync.WaitGroup // the followers' client.Run
	followed  []string       // what each follower found wrong, if anything
}

func newSoak(t *testing.T, cfg soakConfig) *soak {
	seed := uint64(time.Now().UnixNano())
	h := &soak{t: t, cfg: cfg, run: strconv.FormatUint(seed, 36), rng: rand.New(rand.NewPCG(seed, 0)), dir: t.TempDir(),
		want: map[string][]string{}, ended: map[string]bool{}}
	t.Logf("soak %s: seed %d", cfg.name, seed)
	host := "127.0.0.1"
	var err error
	if h.site, err = newSite(t); err != nil {
		h.noNAT = err.Error()
		t.Logf("SKIPPED the network cut: no namespace behind NAT can be made here: %v", err)
	} else {
		host = h.site.hostIP
	}
	data := filepath.Join(t.TempDir(), "data")
	h.srv = newStockServerOn(t, data, host)
	var creds []accounts.Request
	for i := range cfg.agents {
		creds = append(creds, accounts.Request{Name: fmt.Sprintf("soak-%d", i+1), Role: accounts.RoleAgent, Tags: []string{"soak"}})
	}
	h.c = startCoordinator(t, coordOptions{data: data, natsURL: h.srv.url, noLocalAgent: true, creds: creds,
		args: []string{"--ack-wait", cfg.ackWait.String()}})
	for i, cr := range creds {
		a := &soakAgent{name: cr.Name, creds: h.c.creds(cr.Name), work: t.TempDir(), inSite: h.site != nil && i == len(creds)-1}
		h.agent = append(h.agent, a)
		h.startAgent(a)
	}
	if h.api, err = client.Dial(testenv.Context(t), client.DialOptions{URL: h.srv.url, Creds: h.c.creds("admin"), Reconnect: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.api.Close)
	h.watch()
	return h
}

func (h *soak) startAgent(a *soakAgent) {
	t := h.t
	path, args := bin("agent"), []string{"--server", h.srv.url, "--creds", a.creds, "--workdir", a.work,
		"--concurrency", strconv.Itoa(h.cfg.concurrency), "--drain-timeout", "1s"}
	if a.inSite {
		path, args = h.site.command(path, args...)
	}
	if a.proc != nil {
		a.past = append(a.past, a.proc)
	}
	a.proc = startProc(t, h.dir, baseEnv(), path, args...)
	testenv.EventuallyWithin(t, startTimeout, "agent "+a.name+" to be ready", func() bool {
		if a.proc.exited() {
			t.Fatalf("agent %s exited at start:\n%s", a.name, a.proc.stderr.String())
		}
		return strings.Contains(a.proc.stderr.String(), "agent ready")
	})
}

// watch counts the jobs whose terminal status is published, to time the
// faults by progress. It rides out the restarts, and may miss a status
// while the server is down: the end is judged from the records.
func (h *soak) watch() {
	nc, err := nats.Connect(h.srv.url, nats.UserCredentials(h.c.creds("coordinator")), nats.CustomInboxPrefix("_INBOX_coordinator"),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(nc.Close)
	_, err = nc.Subscribe("outpost.live.soak.*.*.status", func(m *nats.Msg) {
		var ev statusEvent
		if json.Unmarshal(m.Data, &ev) == nil && terminal(ev.State) {
			h.mu.Lock()
			h.ended[strings.Split(m.Subject, ".")[4]] = true
			h.mu.Unlock()
		}
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *soak) progress() float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return float64(len(h.ended)) / float64(h.cfg.jobs)
}

func (h *soak) submitAll() {
	script := writeScript(h.t, soakJob)
	for i := range h.cfg.jobs {
		n := h.cfg.minLines + h.rng.IntN(h.cfg.maxLines-h.cfg.minLines+1)
		name := fmt.Sprintf("job%d", i)
		spec := subjects.JobSpec{Tag: "soak", Command: []string{"sh", script}, MaxAttempts: 10,
			Env: map[string]string{"NAME": name, "N": strconv.Itoa(n), "SOAK_RUN": h.run}}
		var id string
		if h.cfg.followers > 0 && i%(h.cfg.jobs/h.cfg.followers) == 0 {
			id = h.follow(spec, numbered(name, n))
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
			r, err := h.api.Submit(ctx, spec)
			cancel()
			if err != nil {
				h.t.Fatalf("submit job %d: %v", i, err)
			}
			id = r.ID
		}
		h.ids = append(h.ids, id)
		h.want[id] = numbered(name, n)
	}
}

// follow submits spec with client.Run and follows it to its end in the
// background, through whatever faults come, and returns the job's ID. What
// Run hands over must be the job's end, once, and before it the lines of
// the attempt that ended, each once and in order.
func (h *soak) follow(spec subjects.JobSpec, want []string) string {
	ids := make(chan string, 1)
	h.following.Add(1)
	go func() {
		defer h.following.Done()
		ctx, cancel := context.WithTimeout(h.t.Context(), 30*time.Minute)
		defer cancel()
		var (
			id    string
			lines = map[int][]string{} // by attempt
			ends  []*subjects.StatusEvent
		)
		_, err := h.api.Run(ctx, spec, client.RunOptions{SubmitTimeout: commandTimeout}, func(e client.Event) error {
			if s := e.Status; s != nil {
				if id == "" {
					id = s.Job
					ids <- id
				}
				if s.State.Terminal() {
					ends = append(ends, s)
				}
				return nil
			}
			lines[e.Log.Attempt] = append(lines[e.Log.Attempt], strings.Split(strings.TrimSuffix(string(e.Log.Data), "\n"), "\n")...)
			return nil
		})
		var problem string
		switch {
		case err != nil:
			problem = fmt.Sprintf("Run failed: %v", err)
		case len(ends) != 1:
			problem = fmt.Sprintf("Run handed over %d ends", len(ends))
		case !slices.Equal(lines[ends[0].Attempt], want):
			problem = fmt.Sprintf("Run handed over %d lines of attempt %d, not the %d lines in order", len(lines[ends[0].Attempt]), ends[0].Attempt, len(want))
		}
		h.mu.Lock()
		h.followed = append(h.followed, problem)
		h.mu.Unlock()
		if id == "" {
			ids <- ""
		}
	}()
	select {
	case id := <-ids:
		if id == "" {
			h.t.Fatalf("a job submitted with client.Run did not say its ID: %v", h.followed)
		}
		return id
	case <-time.After(commandTimeout):
		h.t.Fatal("a job submitted with client.Run did not say its ID")
		return ""
	}
}

// faults injects the faults, each once the run has progressed so far.
func (h *soak) faults() {
	type fault struct {
		at   float64
		what string
	}
	plan := []fault{{0.20, "coordinator"}, {0.40, "cut"}, {0.60, "server"}}
	for i := range h.cfg.kills {
		plan = append(plan, fault{0.05 + 0.75*float64(i)/float64(h.cfg.kills), "kill"})
	}
	slices.SortFunc(plan, func(a, b fault) int { return cmp.Compare(a.at, b.at) })
	for _, f := range plan {
		testenv.EventuallyWithin(h.t, h.cfg.timeout, fmt.Sprintf("%.0f%% of the jobs to end", 100*f.at), func() bool { return h.progress() >= f.at })
		start, at := time.Now(), h.progress()
		switch f.what {
		case "kill":
			a := h.agent[h.rng.IntN(len(h.agent))]
			a.proc.kill(h.t)
			h.kills = append(h.kills, kill{at: start, agent: a.name})
			h.startAgent(a)
		case "coordinator":
			h.c.proc.kill(h.t)
			h.c.start(h.t)
		case "server":
			if h.cfg.crash {
				h.srv.kill(h.t)
			} else {
				h.srv.proc.terminate()
			}
			h.srv.restart(h.t)
			h.c.waitAPI(h.t)
		case "cut":
			if h.site == nil {
				continue
			}
			if err := h.site.cut(); err != nil {
				h.t.Fatal(err)
			}
			select {
			case <-time.After(h.cfg.cut):
			case <-h.t.Context().Done():
			}
			if err := h.site.restore(); err != nil {
				h.t.Fatal(err)
			}
		}
		h.t.Logf("%s at %.0f%% of the jobs ended, for %s", f.what, 100*at, time.Since(start).Round(time.Millisecond))
	}
}

// waitAll waits until every job's record is terminal.
func (h *soak) waitAll() {
	open := slices.Clone(h.ids)
	deadline := time.Now().Add(h.cfg.timeout)
	for len(open) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		left := open[:0]
		var states []string
		for _, id := range open {
			r, err := h.api.Get(ctx, id)
			if err != nil || !r.State.Terminal() {
				left = append(left, id)
				if err == nil {
					states = append(states, fmt.Sprintf("%s %s attempt %d on %s", id, r.State, r.Attempt, r.Agent))
				} else {
					states = append(states, fmt.Sprintf("%s: %v", id, err))
				}
			}
		}
		cancel()
		open = left
		if len(open) > 0 && time.Now().After(deadline) {
			h.t.Fatalf("%d jobs did not end within %s of the last fault:\n%s", len(open), h.cfg.timeout, strings.Join(states[:min(len(states), 20)], "\n"))
		}
		if len(open) > 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func (h *soak) check() {
	t := h.t
	ctx := testenv.Context(t)
	led := readLedger(t, h.srv.url, h.c.creds("coordinator"))
	var lines, lost, dups, retried, failed, badJobs, late int
	var problems []string
	for i, id := range h.ids {
		rec, err := h.api.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != subjects.StateSucceeded {
			failed++
			problems = append(problems, fmt.Sprintf("job %d %s: %s at attempt %d: %s", i, id, rec.State, rec.Attempt, rec.Error))
		}
		if rec.Attempt > 1 {
			retried++
		}
		jc := led.checkJob(id, h.want[id], rec.Attempt)
		lines += jc.lines
		dups += jc.dups
		lost += len(h.want[id]) - jc.lines
		late += jc.late
		p := jc.problems
		if len(p) > 0 {
			badJobs++
		}
		for _, q := range p {
			problems = append(problems, fmt.Sprintf("job %d %s: %s", i, id, q))
		}
		if len(p) > 0 {
			problems = append(problems, h.logsOf(id)...)
		}
	}
	orphans := h.orphans()
	redelivery := h.redeliveries(led)
	// Every job has ended, so every follower ends within a few seconds
	// (a replay, or a look at a quiet job's record).
	followersDone := make(chan struct{})
	go func() { h.following.Wait(); close(followersDone) }()
	select {
	case <-followersDone:
	case <-time.After(time.Minute):
		problems = append(problems, "a follower (client.Run) did not end within a minute of its job")
	}
	h.mu.Lock()
	followedWhole := 0
	for _, p := range h.followed {
		if p == "" {
			followedWhole++
		} else {
			problems = append(problems, "follower: "+p)
		}
	}
	followers := len(h.followed)
	h.mu.Unlock()
	// Requests of ended jobs that a restarted server handed over again, and
	// that an agent acked without running.
	skipped := 0
	for _, a := range h.agent {
		for _, p := range append(a.past, a.proc) {
			skipped += strings.Count(p.stderr.String(), "job handed over again after it ended")
		}
	}

	want := 0
	for _, w := range h.want {
		want += len(w)
	}
	cut := fmt.Sprintf("a %s network cut of agent %s (its own namespace behind NAT)", h.cfg.cut, h.agent[len(h.agent)-1].name)
	if h.site == nil {
		cut = "no network cut (" + h.noNAT + ")"
	}
	summary := fmt.Sprintf("soak %s: %d jobs on %d agents (%d succeeded, %d ran more than once), %d lines of %d, %d lost, %d duplicated, %d orphan processes, %d jobs with a problem (one terminal state, lines once and in order)\n"+
		"  %d requests of ended jobs delivered again and acked unrun by an agent, %d that ran and were stopped at once\n"+
		"  faults: %d agent SIGKILLs, a coordinator SIGKILL and restart, a server %s and restart, %s\n"+
		"  redelivery after an agent SIGKILL (ack wait %s): %s\n"+
		"  followed with client.Run ('outpost run'): %d of %d jobs handed over whole (their end once, its attempt's lines once and in order)",
		h.cfg.name, len(h.ids), len(h.agent), len(h.ids)-failed, retried, lines, want, lost, dups, orphans, badJobs, skipped, late,
		len(h.kills), map[bool]string{true: "SIGKILL", false: "SIGTERM"}[h.cfg.crash], cut, h.cfg.ackWait, redelivery, followedWhole, followers)
	t.Log(summary)
	fmt.Println(summary)
	if len(problems) > 0 || orphans > 0 {
		t.Errorf("%d problems:\n%s", len(problems), strings.Join(problems[:min(len(problems), 30)], "\n"))
	}
}

// logsOf is what the agents and the coordinator logged of job id, to tell
// what happened to a job with a problem.
func (h *soak) logsOf(id string) []string {
	var out []string
	grep := func(who string, p *proc) {
		for _, l := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(l, id) {
				out = append(out, "  "+who+": "+l)
			}
		}
	}
	for _, a := range h.agent {
		for _, p := range append(a.past, a.proc) {
			grep(a.name, p)
		}
	}
	grep("coordinator", h.c.proc)
	return out
}

// orphans counts the processes of this run's jobs still alive once every
// job has ended, and kills them.
func (h *soak) orphans() int {
	var pids []int
	find := func() {
		pids = pids[:0]
		mark := []byte("SOAK_RUN=" + h.run + "\x00")
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			env, err := os.ReadFile(filepath.Join(d, "environ"))
			if err == nil && bytes.Contains(env, mark) {
				pid, _ := strconv.Atoi(filepath.Base(d))
				pids = append(pids, pid)
			}
		}
	}
	// A job's group is killed as it ends; give the kernel a moment.
	deadline := time.Now().Add(5 * time.Second)
	for find(); len(pids) > 0 && time.Now().Before(deadline); find() {
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range pids {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		var job []string
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.HasPrefix(kv, []byte("OUTPOST_JOB_ID=")) || bytes.HasPrefix(kv, []byte("OUTPOST_ATTEMPT=")) {
				job = append(job, string(kv))
			}
		}
		h.t.Logf("orphan process %d: %q %v; stat %s", pid, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}), job, stat)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return len(pids)
}

// redeliveries says how long, after each agent SIGKILL, the jobs that
// agent was running took to start again elsewhere.
func (h *soak) redeliveries(led ledger) string {
	var ds []time.Duration
	requeued := 0
	for _, k := range h.kills {
		for _, j := range led {
			var lost *statusEvent
			for i, s := range j.statuses {
				switch {
				case s.State == "running" && s.Agent == k.agent && s.At.Before(k.at):
					lost = &j.statuses[i]
				case lost != nil && s.Attempt == lost.Attempt && terminal(s.State):
					lost = nil // it ended before the kill
				}
			}
			if lost == nil {
				continue
			}
			for _, s := range j.statuses {
				if s.State == "queued" && s.Attempt > lost.Attempt && s.Error != "" {
					requeued++ // by the coordinator, not by the consumer's redelivery
				}
				if s.State == "running" && s.Attempt > lost.Attempt && s.At.After(k.at) {
					ds = append(ds, s.At.Sub(k.at))
					break
				}
			}
		}
	}
	if len(ds) == 0 {
		return "no job was running on a killed agent"
	}
	slices.Sort(ds)
	return fmt.Sprintf("%d jobs (%d requeued by the coordinator, the others redelivered by the consumer), min %s, median %s, max %s", len(ds), requeued, ds[0].Round(100*time.Millisecond), ds[len(ds)/2].Round(100*time.Millisecond), ds[len(ds)-1].Round(100*time.Millisecond))
}
