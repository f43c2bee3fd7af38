package agent_test

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

// needCgroups skips a test on a machine where this process cannot make
// cgroups (not root, no cgroup file system, no delegation).
func needCgroups(t *testing.T) {
	t.Helper()
	if err := agent.CgroupsUsable(); err != nil {
		t.Skipf("skipped: this process cannot make cgroups (%v); run the tests as root on Linux", err)
	}
}

func TestMemoryLimitOOMKill(t *testing.T) {
	needCgroups(t)
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t)
	// tail keeps the last lines; /dev/zero has no line end, so it keeps all.
	r := s.submit(t, subjects.JobSpec{Tag: "a", Command: []string{"tail", "/dev/zero"}, Limits: &subjects.Limits{Memory: 32 << 20}})
	rec := s.waitState(t, r.ID, subjects.StateFailed)
	if rec.Reason != subjects.ReasonOOMKilled || !strings.Contains(rec.Error, "memory limit of 32Mi") {
		t.Errorf("reason %q, error %q; want %s", rec.Reason, rec.Error, subjects.ReasonOOMKilled)
	}
	t.Logf("OOM-killed job: %s; peak memory %d bytes, %.3f s CPU", rec.Error, rec.PeakMemoryBytes, rec.CPUSeconds)
	if rec.PeakMemoryBytes < 16<<20 || rec.PeakMemoryBytes > 33<<20 {
		t.Errorf("peak memory %d, want about the limit", rec.PeakMemoryBytes)
	}
	if rec.CPUSeconds <= 0 {
		t.Errorf("cpu seconds %v", rec.CPUSeconds)
	}
}

func TestPidsLimit(t *testing.T) {
	needCgroups(t)
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t)
	// The shell and 3 sleeps fit in 4; the 4th sleep cannot be forked.
	r := s.submit(t, subjects.JobSpec{Tag: "a", Limits: &subjects.Limits{Pids: 4},
		Command: sh(`for i in 1 2 3 4; do sleep 30 & done; echo forked all`)})
	s.waitState(t, r.ID, subjects.StateFailed)
	stdout, stderr, _ := s.output(t, r.ID)
	if strings.Contains(stdout, "forked all") || !strings.Contains(strings.ToLower(stderr), "fork") {
		t.Errorf("the job forked past its limit of 4 processes:\nstdout %q\nstderr %q", stdout, stderr)
	}
}

func TestCPULimit(t *testing.T) {
	needCgroups(t)
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t)
	// A busy loop of a few tenths of a second of CPU, at a tenth of a core,
	// is throttled; the kernel's own counters say so, and what the quota is.
	r := s.submit(t, subjects.JobSpec{Tag: "a", Limits: &subjects.Limits{CPU: 0.1}, Command: sh(`
		i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done
		for f in /sys/fs/cgroup/cpu$(grep -E '^[0-9]+:cpu:' /proc/self/cgroup | cut -d: -f3) /sys/fs/cgroup$(grep '^0::' /proc/self/cgroup | cut -d: -f3); do
			cat $f/cpu.cfs_quota_us $f/cpu.max 2>/dev/null; grep nr_throttled $f/cpu.stat 2>/dev/null
		done; true`)})
	rec := s.waitState(t, r.ID, subjects.StateSucceeded)
	stdout, _, _ := s.output(t, r.ID)
	if !strings.Contains(stdout, "10000") {
		t.Errorf("no quota of 10000us per 100000us in %q", stdout)
	}
	throttled := false
	for _, l := range strings.Split(stdout, "\n") {
		if n, ok := strings.CutPrefix(l, "nr_throttled "); ok && n != "0" {
			throttled = true
		}
	}
	if !throttled {
		t.Errorf("the job was never throttled: %q", stdout)
	}
	if rec.CPUSeconds <= 0 || rec.PeakMemoryBytes == 0 {
		t.Errorf("usage %+v", rec.Usage)
	}
	t.Logf("at 0.1 cores: %.3f s CPU over %s; %q", rec.CPUSeconds, rec.FinishedAt.Sub(*rec.StartedAt).Round(time.Millisecond), stdout)
}

// A stop reaches processes that left the job's process group: one in a
// session of its own (setsid), and one that did the same from a parent
// that exited (a double fork, as daemons do).
func TestStopKillsProcessesThatLeftTheGroup(t *testing.T) {
	needCgroups(t)
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	s.startAgent(t)
	dir := t.TempDir()
	r := s.submit(t, subjects.JobSpec{Tag: "a", Dir: dir, Command: sh(`
		echo $$ > main.pid
		setsid sh -c 'echo $$ > setsid.pid; exec sleep 1000' &
		sh -c 'setsid sleep 1000 & echo $! > orphan.pid'
		sleep 1000`)})
	s.waitState(t, r.ID, subjects.StateRunning)
	var pids []int
	testenv.Eventually(t, "the job's processes to write their pids", func() bool {
		pids = pids[:0]
		for _, f := range []string{"main.pid", "setsid.pid", "orphan.pid"} {
			b, err := os.ReadFile(dir + "/" + f)
			n, err2 := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || err2 != nil {
				return false
			}
			pids = append(pids, n)
		}
		return true
	})
	for _, pid := range pids[1:] {
		if pgid, err := syscall.Getpgid(pid); err != nil || pgid == pids[0] {
			t.Fatalf("pid %d: pgid %d, %v: it did not leave the job's group %d", pid, pgid, err, pids[0])
		}
	}
	if _, err := s.alice.Stop(testenv.Context(t), subjects.StopRequest{ID: r.ID, Force: true}); err != nil {
		t.Fatal(err)
	}
	s.waitState(t, r.ID, subjects.StateStopped)
	testenv.Eventually(t, "the escaped processes to be gone", func() bool {
		for _, pid := range pids {
			if agent.Alive(pid) {
				return false
			}
		}
		return true
	})
}

// An agent without cgroups says so, runs jobs without limits (reporting
// what the kernel counted for them), and hands a job with limits back to
// the queue, where an agent with cgroups takes it.
func TestAgentWithoutCgroupsRefusesLimits(t *testing.T) {
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	next := s.heartbeats(t)
	s.env.StartAgent(s.agentCreds, agent.Config{Cgroups: agent.CgroupOptions{Disabled: true}})
	if hb := next("the first beat"); hb.Cgroups != "" || !strings.Contains(hb.NoCgroups, "--no-cgroups") {
		t.Errorf("heartbeat %+v: want no cgroups, and why", hb)
	}

	plain := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("head -c 1000000 /dev/zero | wc -c")})
	rec := s.waitState(t, plain.ID, subjects.StateSucceeded)
	if rec.PeakMemoryBytes == 0 {
		t.Errorf("no peak memory from the process's own accounting: %+v", rec.Usage)
	}

	mark := s.env.Logs.Len()
	limited := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("echo limited"), Limits: &subjects.Limits{Memory: 64 << 20}, MaxAttempts: 10})
	s.env.Logs.Wait(t, mark, "the agent to hand the job back", func(e testenv.Entry) bool {
		return e.Msg == "cannot enforce the job's limits here; it goes back to the queue"
	})
	if r, err := s.alice.Get(testenv.Context(t), limited.ID); err != nil || r.State != subjects.StateQueued {
		t.Fatalf("job with limits on an agent without cgroups: %+v, %v", r, err)
	}
	if err := agent.CgroupsUsable(); err != nil {
		return
	}
	other := s.env.Creds(accounts.RoleAgent, "agent-b", "a")
	s.env.StartAgent(other, agent.Config{})
	rec = s.waitState(t, limited.ID, subjects.StateSucceeded)
	if rec.Agent != "agent-b" {
		t.Errorf("the job with limits ran on %s, want agent-b (with cgroups)", rec.Agent)
	}
}

// A v1 agent keeps a job's cgroup once the job is done and gives it to
// the next run (v2 makes one per run): the next job must find none of the
// limits the last one asked for, and report none of its usage. The second
// job needs more memory and more processes than the first was allowed,
// and uses far less CPU.
func TestCgroupReuseStartsClean(t *testing.T) {
	needCgroups(t)
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	// A name of its own: its cgroup, outpost-agent-pool, is no other test's.
	s.agentCreds = s.env.Creds(accounts.RoleAgent, "agent-pool", "a")
	work := t.TempDir()
	a, stop, wait := runAgent(t, s, agent.Config{Concurrency: 1, WorkDir: work})
	if a.CgroupVersion() != "v1" {
		t.Skipf("skipped: cgroups are %q here; only v1 keeps them", a.CgroupVersion())
	}
	const pidsLine = `grep -E '^[0-9]+:pids:' /proc/self/cgroup | cut -d: -f3`
	first := s.submit(t, subjects.JobSpec{Tag: "a", Limits: &subjects.Limits{Memory: 16 << 20, Pids: 4},
		Command: sh(`touch left-behind; i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; ` + pidsLine)})
	rec1 := s.waitState(t, first.ID, subjects.StateSucceeded)
	// The cgroup goes back before the work directory goes (see run): the
	// job left a file in it, so it is not kept.
	testenv.Eventually(t, "the first job to be tidied away", func() bool {
		entries, err := os.ReadDir(work)
		return err == nil && len(entries) == 0
	})
	second := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh(`
		for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; echo forked all
		head -c 40000000 /dev/zero | tail | wc -c
		` + pidsLine + `; wait`)})
	rec2 := s.waitState(t, second.ID, subjects.StateSucceeded)
	out1, _, _ := s.output(t, first.ID)
	out2, stderr2, _ := s.output(t, second.ID)
	if !strings.Contains(out2, "forked all") || !strings.Contains(out2, "40000000") {
		t.Errorf("the second job was held to the first one's limits:\nstdout %q\nstderr %q", out2, stderr2)
	}
	cg1 := strings.TrimSpace(out1)
	lines2 := strings.Split(strings.TrimSpace(out2), "\n")
	cg2 := lines2[len(lines2)-1]
	if !strings.Contains(cg1, "/outpost-agent-pool/slot-") || cg1 != cg2 {
		t.Errorf("the jobs ran in cgroups %q and %q; want one slot-* cgroup, reused", cg1, cg2)
	}
	t.Logf("CPU: first %.3f s, second %.3f s; peak memory of the second %d bytes", rec1.CPUSeconds, rec2.CPUSeconds, rec2.PeakMemoryBytes)
	if rec1.CPUSeconds <= 0 || rec2.CPUSeconds >= rec1.CPUSeconds {
		t.Errorf("CPU seconds: first %v, second %v; the second must not count the first's", rec1.CPUSeconds, rec2.CPUSeconds)
	}
	if rec2.PeakMemoryBytes < 16<<20 {
		t.Errorf("the second job's peak memory %d is below what it used", rec2.PeakMemoryBytes)
	}
	stop()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	// The memory controller's cgroups may lie elsewhere than the pids
	// one's: look in every hierarchy.
	var left []string
	_ = filepath.WalkDir("/sys/fs/cgroup", func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && strings.HasPrefix(d.Name(), "slot-") && filepath.Base(filepath.Dir(path)) == "outpost-agent-pool" {
			left = append(left, path)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("cgroups left behind once the agent stopped: %v", left)
	}
}

// Two agents of one name share their cgroup (one drains beside its
// successor, say). The one that stops removes its own job cgroups and
// nothing of the other's: the other's kept cgroup is still there, and its
// next job runs in it.
func TestAgentOfTheSameNameKeepsItsCgroups(t *testing.T) {
	needCgroups(t)
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	// A name of its own: its cgroup, outpost-agent-twin, is no other test's.
	s.agentCreds = s.env.Creds(accounts.RoleAgent, "agent-twin", "a")
	first, stopFirst, waitFirst := runAgent(t, s, agent.Config{Concurrency: 1})
	if first.CgroupVersion() != "v1" {
		t.Skipf("skipped: cgroups are %q here; only v1 keeps them", first.CgroupVersion())
	}
	_, stopSecond, waitSecond := runAgent(t, s, agent.Config{Concurrency: 1})
	defer func() { stopSecond(); _ = waitSecond() }()
	const pidsLine = `grep -E '^[0-9]+:pids:' /proc/self/cgroup | cut -d: -f3`
	// Two jobs that wait for each other take one agent each.
	gate := filepath.Join(t.TempDir(), "gate")
	var ids []string
	for range 2 {
		r := s.submit(t, subjects.JobSpec{Tag: "a", Env: map[string]string{"GATE": gate},
			Command: sh(`while [ ! -e "$GATE" ]; do sleep 0.01; done; ` + pidsLine)})
		ids = append(ids, r.ID)
	}
	testenv.Eventually(t, "both jobs to run", func() bool {
		for _, id := range ids {
			if r, err := s.alice.Get(testenv.Context(t), id); err != nil || r.State != subjects.StateRunning {
				return false
			}
		}
		return true
	})
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var cgs []string
	for _, id := range ids {
		s.waitState(t, id, subjects.StateSucceeded)
		out, _, _ := s.output(t, id)
		cgs = append(cgs, strings.TrimSpace(out))
	}
	if cgs[0] == cgs[1] || !strings.Contains(cgs[0], "/outpost-agent-twin/slot-") {
		t.Fatalf("the jobs ran in cgroups %q; want a slot-* of each agent", cgs)
	}
	dir := func(cg string) string { return filepath.Join("/sys/fs/cgroup/pids", cg) }
	testenv.Eventually(t, "both agents to keep their job's cgroup", func() bool {
		for _, cg := range cgs {
			if _, err := os.Stat(dir(cg)); err != nil {
				return false
			}
		}
		return true
	})
	stopFirst()
	if err := waitFirst(); err != nil {
		t.Fatal(err)
	}
	kept := 0
	for _, cg := range cgs {
		if _, err := os.Stat(dir(cg)); err == nil {
			kept++
		}
	}
	if kept != 1 {
		t.Fatalf("%d of the two agents' kept cgroups remain once one agent stopped; want the other's", kept)
	}
	r := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh(pidsLine)})
	s.waitState(t, r.ID, subjects.StateSucceeded)
}

// An agent that died left its kept cgroups (its watchdog killed what ran
// in them, but removes no cgroup). The next agent of its name removes
// them when it starts, if they are empty; those of a live agent stay.
func TestDeadAgentsCgroupsRemoved(t *testing.T) {
	needCgroups(t)
	t.Parallel()
	s := newSite(t, coordinator.Limits{})
	s.agentCreds = s.env.Creds(accounts.RoleAgent, "agent-heir", "a")
	// A process that is gone, and so is its pid, for a while.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("slot-%d-dead-1", gone.Process.Pid)
	live := fmt.Sprintf("slot-%d-live-1", os.Getpid())
	var dirs []string
	// The agent's cgroups lie under this process's own, in each hierarchy.
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	home := map[string]string{}
	for line := range strings.Lines(string(self)) {
		if f := strings.SplitN(strings.TrimSpace(line), ":", 3); len(f) == 3 {
			home[f[1]] = f[2]
		}
	}
	for _, ctrl := range []string{"pids", "cpu", "cpuacct"} {
		for _, name := range []string{dead, live} {
			d := filepath.Join("/sys/fs/cgroup", ctrl, home[ctrl], "outpost-agent-heir", name)
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Skipf("skipped: cannot make v1 cgroups here: %v", err)
			}
			dirs = append(dirs, d)
		}
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			_ = os.Remove(d)
		}
	})
	a, stop, wait := runAgent(t, s, agent.Config{Concurrency: 1})
	defer func() { stop(); _ = wait() }()
	if a.CgroupVersion() != "v1" {
		t.Skipf("skipped: cgroups are %q here; only v1 keeps them", a.CgroupVersion())
	}
	for _, d := range dirs {
		_, err := os.Stat(d)
		if strings.HasSuffix(d, dead) && err == nil {
			t.Errorf("the dead agent's cgroup %s is still there", d)
		}
		if strings.HasSuffix(d, live) && err != nil {
			t.Errorf("a live agent's cgroup %s was removed: %v", d, err)
		}
	}
}
