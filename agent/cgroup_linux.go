package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/outpost-run/outpost/subjects"
)

// cfsPeriod is the CPU quota period, in microseconds: the kernel's default.
const cfsPeriod = 100_000

// poolSize bounds how many empty v1 job cgroups an agent keeps for reuse.
// Making one costs four mkdirs and removing it four rmdirs, about 0.45 ms
// of the agent's CPU per job; resetting a kept one costs a few writes. An
// agent runs at most its concurrency at once, so a few more than that are
// plenty for most; beyond it they are removed.
const poolSize = 16

// removeWait bounds how long removing a job's cgroup waits for its killed
// processes to be gone, and rmdirWait how long it then tries to remove it.
const (
	removeWait = 10 * time.Second
	rmdirWait  = 5 * time.Second
)

// newCgroups finds the cgroup hierarchy and makes the agent's own cgroup,
// outpost-<agent>, under opt.Parent. Its error says why this agent cannot
// give jobs cgroups. With a v1 hierarchy (alone, or beside a v2 one that
// holds no controllers, as "hybrid" systems have it) the controllers are
// in v1, so v1 it is.
func newCgroups(agent string, opt CgroupOptions) (cgroupHost, error) {
	if opt.Disabled {
		return nil, errors.New("turned off (--no-cgroups)")
	}
	switch cgroups.Mode() {
	case cgroups.Unified:
		return newV2("/sys/fs/cgroup", agent, opt.Parent, []string{"memory", "cpu", "pids"})
	case cgroups.Legacy, cgroups.Hybrid:
		return newV1(agent, opt.Parent)
	}
	return nil, errors.New("no cgroup hierarchy is mounted at /sys/fs/cgroup")
}

// v1 is a cgroup v1 hierarchy: a job's cgroup is a directory of the same
// path under each controller it needs.
type v1 struct {
	hierarchy cgroup1.Hierarchy
	path      func(job string) cgroup1.Path
	// home are the agent process's cgroup's directories, which the thread
	// that started a job goes back to (see start), and homeFiles their
	// tasks files, kept open.
	home      []string
	homeFiles cgFiles
	swap      bool // memory.memsw exists: swap counts against the memory limit

	// Job cgroups are named slot-<pid>-<token>-<n>, not for a job, so that an
	// empty one can serve the next run without a mkdir and rmdir in each
	// hierarchy.
	pool  spares[*v1Job] // empty cgroups for reuse, none of them running
	token string         // random, in every slot's name
	slots atomic.Uint64
}

// v1Controllers are the controllers a job's cgroup needs: its limits, and
// its CPU time. The freezer is not among them: a v1 freezer can wait
// forever on a process in vfork, and a kill need not freeze (see signal).
var v1Controllers = []cgroup1.Name{cgroup1.Memory, cgroup1.Cpu, cgroup1.Cpuacct, cgroup1.Pids}

func newV1(agent, parent string) (*v1, error) {
	all, err := cgroup1.Default()
	if err != nil {
		return nil, fmt.Errorf("cgroup v1: %w", err)
	}
	var subs []cgroup1.Subsystem
	for _, name := range v1Controllers {
		i := slices.IndexFunc(all, func(s cgroup1.Subsystem) bool { return s.Name() == name })
		if i < 0 {
			return nil, fmt.Errorf("cgroup v1: the %s controller is not mounted", name)
		}
		s := all[i]
		if name == cgroup1.Memory {
			// Swap accounting may be off; its figures are then not read.
			root := filepath.Dir(s.(interface{ Path(string) string }).Path("/"))
			s = cgroup1.NewMemory(root, cgroup1.OptionalSwap())
		}
		subs = append(subs, s)
	}
	token := make([]byte, 4)
	if _, err := rand.Read(token); err != nil {
		return nil, fmt.Errorf("cgroup v1: %w", err)
	}
	g := &v1{hierarchy: func() ([]cgroup1.Subsystem, error) { return subs, nil }, token: hex.EncodeToString(token), pool: spares[*v1Job]{max: poolSize}}
	// Where the agent is now, read once: while a job starts, one of its
	// threads is in the job's cgroup, and may be the one /proc/self shows.
	home := map[cgroup1.Name]string{}
	for _, s := range subs {
		if parent != "" {
			home[s.Name()] = filepath.Join("/", parent)
			continue
		}
		p, err := cgroup1.NestedPath("")(s.Name())
		if err != nil {
			return nil, fmt.Errorf("cgroup v1: the agent's own %s cgroup: %w", s.Name(), err)
		}
		home[s.Name()] = p
	}
	base := "outpost-" + agent
	g.path = func(job string) cgroup1.Path {
		return func(n cgroup1.Name) (string, error) { return filepath.Join(home[n], base, job), nil }
	}
	for _, s := range subs {
		p, err := cgroup1.NestedPath("")(s.Name())
		if err != nil {
			return nil, fmt.Errorf("cgroup v1: the agent's own %s cgroup: %w", s.Name(), err)
		}
		g.home = append(g.home, s.(interface{ Path(string) string }).Path(p))
	}
	// Controllers mounted together share a directory; the thread moves
	// once.
	slices.Sort(g.home)
	g.home = slices.Compact(g.home)
	if _, err = cgroup1.New(g.path(""), &specs.LinuxResources{}, cgroup1.WithHierarchy(g.hierarchy)); err != nil {
		return nil, fmt.Errorf("cgroup v1: make the agent's cgroup: %w", err)
	}
	g.removeDeadSlots()
	_, err = os.Stat(filepath.Join(g.dirs("")[cgroup1.Memory], "memory.memsw.limit_in_bytes"))
	g.swap = err == nil
	return g, nil
}

func (g *v1) version() string { return "v1" }

// close removes the kept cgroups, and then the agent's own.
func (g *v1) close() {
	for _, j := range g.pool.close() {
		_ = j.rmdir()
	}
	// Only if it is empty: agents of the same name share it (one that
	// drains beside its successor, say), and the cgroups library would
	// remove the other's empty job cgroups with it.
	for _, dir := range g.dirs("") {
		_ = os.Remove(dir)
	}
	g.homeFiles.close()
}

// jobsDir is the agent's cgroup in the pids hierarchy, which every job's
// cgroup is in.
func (g *v1) jobsDir() string { return g.dirs("")[cgroup1.Pids] }

// removeDeadSlots removes the kept cgroups that agents of this name left
// when they died (their watchdog killed what ran in them, but removes no
// cgroup): those whose agent process, named in the cgroup's name, is gone.
// A cgroup that is not empty stays.
func (g *v1) removeDeadSlots() {
	entries, _ := os.ReadDir(g.jobsDir())
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "slot-%d-", &pid); err != nil || !e.IsDir() || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue
		}
		dirs := g.dirs(e.Name())
		if procs, err := cgroupProcs(dirs[cgroup1.Pids]); err == nil && len(procs) == 0 {
			_ = (&v1Job{dirs: dirs}).rmdir()
		}
	}
}

// create takes a kept cgroup if there is one, and sets its limits anew;
// id, the run's name, is not the cgroup's: a kept cgroup outlives its run.
func (g *v1) create(id string, limits *subjects.Limits) (jobCgroup, error) {
	if j, ok := g.pool.take(); ok {
		err := j.reset(limits)
		if err == nil {
			return j, nil
		}
		// Its limits could not be set (memory the last job left charged,
		// say): a new one has nothing left over.
		_ = j.rmdir()
	}
	// Unique among the agents of one name, which share their cgroup (one
	// that drains beside its successor, say): the host's own random token.
	slot := "slot-" + strconv.Itoa(os.Getpid()) + "-" + g.token + "-" + strconv.FormatUint(g.slots.Add(1), 10)
	return g.make(slot, limits)
}

// make makes a new cgroup with the given limits.
func (g *v1) make(slot string, limits *subjects.Limits) (*v1Job, error) {
	if _, err := cgroup1.New(g.path(slot), &specs.LinuxResources{}, cgroup1.WithHierarchy(g.hierarchy)); err != nil {
		return nil, fmt.Errorf("make cgroup: %w", err)
	}
	dirs := g.dirs(slot)
	moves := slices.Sorted(maps.Values(dirs))
	j := &v1Job{host: g, slot: slot, dirs: dirs, moves: slices.Compact(moves), files: &cgFiles{}}
	// One way to set limits, for a new cgroup as for a kept one.
	if err := j.reset(limits); err != nil {
		_ = j.rmdir()
		return nil, err
	}
	return j, nil
}

// dirs are the directories of job id's cgroup, by controller (two
// controllers mounted together share one).
func (g *v1) dirs(id string) map[cgroup1.Name]string {
	subs, _ := g.hierarchy()
	out := map[cgroup1.Name]string{}
	for _, s := range subs {
		rel, _ := g.path(id)(s.Name())
		out[s.Name()] = s.(interface{ Path(string) string }).Path(rel)
	}
	return out
}

type v1Job struct {
	host *v1
	slot string // the cgroup's name
	pids string // the pids limit to set once the job has started ("": none)
	// oomBase is the cgroup's count of OOM kills when this run took it:
	// the kernel's count cannot be reset, and earlier runs' kills are not
	// this one's.
	oomBase uint64
	// dirs are the cgroup's directories, which listing its processes, its
	// usage and its removal read and remove directly: the cgroups library
	// lists the processes by walking every file of a controller's
	// directory, four times over to remove a cgroup, and reads every
	// figure of every controller for three; a trivial job's agent spent
	// about a third of its CPU in it.
	dirs map[cgroup1.Name]string
	// moves are its distinct directories, which the starting thread moves
	// into (controllers mounted together share one).
	moves []string
	// files are the cgroup's files that each run writes or reads, kept
	// open with the cgroup, and the values last written to them: a run
	// writes only the limits that differ from its predecessor's.
	files *cgFiles
	// released is set before the run gives the cgroup back to the pool: a
	// stop that comes late must not reach the next run's processes, so
	// signal holds mu for reading while it sends, and remove for writing
	// while it sets released. Each run has a v1Job of its own.
	mu       sync.RWMutex
	released bool
	// empty is set once a kill found no process left in it: nothing can
	// join an emptied cgroup but the agent's starting thread, so remove
	// need not list its processes again.
	empty atomic.Bool
}

func (j *v1Job) name() string { return j.slot }

// reset readies a cgroup for a run with limits (nil: none): it sets each
// limit the run asks for and lifts those an earlier run set. The counters
// the run reports start from zero already: a new cgroup's do, and a kept
// one's were set so when it was kept (see remove), off the path from a
// job's delivery to its start. The cgroup is empty, so no process sees a
// limit between two writes.
func (j *v1Job) reset(limits *subjects.Limits) error {
	var l subjects.Limits
	if limits != nil {
		l = *limits
	}
	mem, cpu, pids := j.dirs[cgroup1.Memory], j.dirs[cgroup1.Cpu], j.dirs[cgroup1.Pids]
	memory := "-1"
	if l.Memory > 0 {
		memory = strconv.FormatUint(uint64(l.Memory), 10)
	}
	quota := "-1"
	if l.CPU > 0 {
		quota = strconv.FormatInt(int64(float64(l.CPU)*cfsPeriod), 10)
	}
	pidsMax := "max"
	j.pids = ""
	if l.Pids > 0 {
		// One more while the agent's thread is inside (see start).
		j.pids = strconv.FormatInt(int64(l.Pids), 10)
		pidsMax = strconv.FormatInt(int64(l.Pids)+1, 10)
	}
	f := j.files
	limit, memsw := filepath.Join(mem, "memory.limit_in_bytes"), filepath.Join(mem, "memory.memsw.limit_in_bytes")
	err := f.set(limit, memory)
	if j.host.swap && (!f.is(limit, memory) || !f.is(memsw, memory)) {
		// The kernel wants memsw.limit >= limit after every write: lift
		// memsw first, whichever way the limit goes, and set it last.
		err = errors.Join(f.set(memsw, "-1"), f.set(limit, memory), f.set(memsw, memory))
	}
	if err == nil {
		err = errors.Join(
			f.set(filepath.Join(cpu, "cpu.cfs_period_us"), strconv.Itoa(cfsPeriod)),
			f.set(filepath.Join(cpu, "cpu.cfs_quota_us"), quota),
			f.set(filepath.Join(pids, "pids.max"), pidsMax))
	}
	if err != nil {
		return fmt.Errorf("reset cgroup %s: %w", j.slot, err)
	}
	return nil
}

// zero starts the counters a run reports from zero, for the next run of an
// emptied cgroup, and returns its count of OOM kills so far, which the
// kernel cannot reset: the next run counts only its own. It also lifts a
// CPU quota: one the last run spent would hold the next run's starting
// thread, and with it the agent (which runs on one P), until the period
// ends; a run that wants a quota sets it afresh, which refills it.
func (j *v1Job) zero() (oomBase uint64, err error) {
	err = errors.Join(
		j.files.write(filepath.Join(j.dirs[cgroup1.Memory], "memory.max_usage_in_bytes"), "0"),
		j.files.write(filepath.Join(j.dirs[cgroup1.Cpuacct], "cpuacct.usage"), "0"),
		j.files.set(filepath.Join(j.dirs[cgroup1.Cpu], "cpu.cfs_quota_us"), "-1"))
	if err != nil {
		return 0, fmt.Errorf("reset the counters of cgroup %s: %w", j.slot, err)
	}
	return j.oomKills(), nil
}

// start places the job's first process in the cgroup before it runs any of
// the command. A v1 cgroup can only be joined by writing a pid into it once
// the process exists, and by then the command may have forked children
// that stay outside. So the thread that forks moves into the job's cgroup
// first (v1 lets single threads move, by writing their id to "tasks"): the
// child is born inside, as are all its children, and the thread moves back
// once the command started. The thread is locked to this goroutine
// throughout, so no other goroutine runs on it meanwhile, and the Go runtime
// makes no new threads from a locked one. While the thread is inside it
// counts as one process, which is why pids.max is one more until it left.
func (j *v1Job) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		tid := strconv.Itoa(unix.Gettid())
		if err := j.files.move(j.moves, tid); err != nil {
			// It may be in some of the cgroups already.
			if j.host.homeFiles.move(j.host.home, tid) == nil {
				runtime.UnlockOSThread()
			}
			errc <- fmt.Errorf("%w: join it: %w", errJobCgroup, err)
			return
		}
		err := cmd.Start()
		var perr error
		if err == nil && j.pids != "" {
			// Lowered while the thread is still inside, where it counts:
			// lowered after it left, the job could fork into the room it
			// left before the limit came down, and stay one over. A
			// failure is acted on once the thread is out, when a kill
			// can see the cgroup empty.
			perr = j.files.set(filepath.Join(j.dirs[cgroup1.Pids], "pids.max"), j.pids)
		}
		if herr := j.host.homeFiles.move(j.host.home, tid); herr != nil {
			// The thread stays locked, so it ends with this goroutine
			// rather than run the agent inside the job's limits.
			if err == nil {
				j.signal(syscall.SIGKILL)
				_ = cmd.Wait()
				err = fmt.Errorf("%w: leave it: %w", errJobCgroup, herr)
			}
			errc <- err
			return
		}
		runtime.UnlockOSThread()
		if perr != nil {
			j.signal(syscall.SIGKILL)
			_ = cmd.Wait()
			err = fmt.Errorf("%w: set the pids limit: %w", errJobCgroup, perr)
		}
		errc <- err
	}()
	return <-errc
}

// killPasses bounds the passes of a v1 kill.
const killPasses = 100

// signal sends sig to every process of the job. A SIGKILL goes round until
// the cgroup is empty: a process killed can fork no more, so a child
// forked while a pass listed the processes is caught by the next one.
func (j *v1Job) signal(sig syscall.Signal) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.released {
		return
	}
	for range killPasses {
		procs, err := cgroupProcs(j.dirs[cgroup1.Pids])
		if err == nil && len(procs) == 0 {
			j.empty.Store(true)
		}
		if err != nil || len(procs) == 0 {
			return
		}
		for _, p := range procs {
			// The agent itself is listed while one of its threads starts
			// a job of this cgroup.
			if p != os.Getpid() {
				_ = syscall.Kill(p, sig)
			}
		}
		if sig != syscall.SIGKILL {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (j *v1Job) usage() cgroupUsage {
	var u cgroupUsage
	mem, cpu := j.dirs[cgroup1.Memory], j.dirs[cgroup1.Cpuacct]
	u.peakMemory, _ = j.files.readUint(filepath.Join(mem, "memory.max_usage_in_bytes"))
	if ns, err := j.files.readUint(filepath.Join(cpu, "cpuacct.usage")); err == nil {
		u.cpuSeconds = float64(ns) / 1e9
	}
	if n := j.oomKills(); n > j.oomBase {
		u.oomKills = n - j.oomBase
	}
	return u
}

// oomKills reads the cgroup's count of OOM kills.
func (j *v1Job) oomKills() uint64 {
	b, err := j.files.read(filepath.Join(j.dirs[cgroup1.Memory], "memory.oom_control"))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if n, ok := strings.CutPrefix(strings.TrimSpace(line), "oom_kill "); ok {
			v, _ := strconv.ParseUint(n, 10, 64)
			return v
		}
	}
	return 0
}

// remove kills what is left and keeps the cgroup for a later run if the
// kill left it empty, with no cgroups of the job's own below it, and the
// pool has room; otherwise it removes it.
func (j *v1Job) remove() (kept bool, err error) {
	empty := j.empty.Load()
	if !empty {
		err := killAll(func() (int, error) {
			procs, err := cgroupProcs(j.dirs[cgroup1.Pids])
			empty = err == nil && len(procs) == 0
			return len(procs), err
		}, func() { j.signal(syscall.SIGKILL) })
		if err != nil {
			j.files.close() // the cgroup stays, with what would not die, and serves no run
			return false, err
		}
	}
	if empty && j.flat() {
		oomBase, err := j.zero()
		if err != nil {
			return false, j.rmdir() // kept, it would report the wrong figures
		}
		// Released before it is kept, for the next run may take it at once;
		// released, it is past signalling, and empty, it needs none.
		j.mu.Lock()
		j.released = true
		j.mu.Unlock()
		if j.host.pool.put(&v1Job{host: j.host, slot: j.slot, dirs: j.dirs, moves: j.moves, files: j.files, oomBase: oomBase}) {
			return true, nil
		}
	}
	return false, j.rmdir()
}

// flat reports whether the cgroup has no cgroups below it, which the job
// made, in any hierarchy: a later run must start in one as good as new.
func (j *v1Job) flat() bool {
	for _, dir := range j.dirs {
		if subdirs(dir) != 0 {
			return false
		}
	}
	return true
}

// subdirs is how many directories are in dir (-1: it cannot tell). A
// directory's link count is 2 and one for each directory in it, and
// cgroupfs keeps it so too: a stat is cheaper than listing its files.
func subdirs(dir string) int {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return -1
	}
	return int(st.Nlink) - 2
}

// rmdir removes the cgroup, which is empty, in every hierarchy.
func (j *v1Job) rmdir() error {
	if j.files != nil {
		j.files.close()
	}
	var errs []error
	for _, dir := range j.dirs {
		if err := removeCgroupDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cgroupProcs lists the processes of the v1 cgroup at dir and of the
// cgroups below it; a cgroup that is gone holds none.
func cgroupProcs(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var procs []int
	for f := range strings.FieldsSeq(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			procs = append(procs, pid)
		}
	}
	if subdirs(dir) == 0 {
		return procs, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() {
			more, err := cgroupProcs(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil, err
			}
			procs = append(procs, more...)
		}
	}
	return procs, nil
}

// removeCgroupDir removes the empty v1 cgroup at dir, the cgroups below it
// first. The kernel may refuse for a moment after the last process left
// (EBUSY), so it tries a few times.
func removeCgroupDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroupDir(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	// On a busy machine the kernel may take a while to let the cgroup go
	// (it waits for RCU grace periods), so the tries go on for seconds.
	delay, deadline := 10*time.Millisecond, time.Now().Add(rmdirWait)
	for {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// killAll kills what is left in a cgroup until count finds it empty, for
// at most removeWait.
func killAll(count func() (int, error), kill func()) error {
	for deadline := time.Now().Add(removeWait); ; time.Sleep(10 * time.Millisecond) {
		n, err := count()
		if err != nil || n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup still holds %d processes", n)
		}
		kill()
	}
}

// v2 is the unified cgroup hierarchy: one directory per job, which the
// job's first process is born into (clone3 with CLONE_INTO_CGROUP).
type v2 struct {
	mount string
	own   *cgroup2.Manager // the agent's own: outpost-<agent>
	path  string           // its path inside the hierarchy
	have  []string         // the controllers enabled for jobs
}

// newV2 makes the agent's cgroup under parent (empty: the agent's own
// cgroup) and enables the controllers it needs for its children.
func newV2(mount, agent, parent string, need []string) (*v2, error) {
	if parent == "" {
		_, own, err := cgroups.ParseCgroupFileUnified("/proc/self/cgroup")
		if err != nil {
			return nil, fmt.Errorf("cgroup v2: the agent's own cgroup: %w", err)
		}
		parent = own
	}
	g := &v2{mount: mount, path: filepath.Join("/", parent, "outpost-"+agent), have: need}
	var err error
	if g.own, err = cgroup2.NewManager(mount, g.path, &cgroup2.Resources{}); err != nil {
		return nil, fmt.Errorf("cgroup v2: make %s: %w", g.path, err)
	}
	if len(need) > 0 {
		if err := g.own.ToggleControllers(need, cgroup2.Enable); err != nil {
			g.close()
			return nil, fmt.Errorf("cgroup v2: enable the %s controllers under %s (give --cgroup-parent a cgroup delegated to the agent that holds no process): %w",
				strings.Join(need, ", "), parent, err)
		}
		// ToggleControllers enables them on the ancestors; the agent's own
		// cgroup hands them on to each job's.
		if err := os.WriteFile(filepath.Join(mount, g.path, "cgroup.subtree_control"), []byte("+"+strings.Join(need, " +")), 0o644); err != nil {
			g.close()
			return nil, fmt.Errorf("cgroup v2: enable the %s controllers in %s: %w", strings.Join(need, ", "), g.path, err)
		}
	}
	return g, nil
}

func (g *v2) version() string { return "v2" }

// close removes the agent's own cgroup if it is empty (see v1's).
func (g *v2) close() { _ = os.Remove(filepath.Join(g.mount, g.path)) }

func (g *v2) jobsDir() string { return filepath.Join(g.mount, g.path) }

func (g *v2) create(id string, limits *subjects.Limits) (jobCgroup, error) {
	res := &cgroup2.Resources{}
	if l := limits; l != nil {
		if l.Memory > 0 {
			m, group, noSwap := int64(l.Memory), true, int64(0)
			res.Memory = &cgroup2.Memory{Max: &m, OOMGroup: &group}
			if _, err := os.Stat(filepath.Join(g.mount, g.path, "memory.swap.max")); err == nil {
				res.Memory.Swap = &noSwap
			}
		}
		if l.CPU > 0 {
			quota, period := int64(float64(l.CPU)*cfsPeriod), uint64(cfsPeriod)
			res.CPU = &cgroup2.CPU{Max: cgroup2.NewCPUMax(&quota, &period)}
		}
		if l.Pids > 0 {
			res.Pids = &cgroup2.Pids{Max: int64(l.Pids)}
		}
		for _, c := range res.EnabledControllers() {
			if !slices.Contains(g.have, c) {
				return nil, fmt.Errorf("the %s controller is not enabled for the agent's cgroup", c)
			}
		}
	}
	m, err := cgroup2.NewManager(g.mount, filepath.Join(g.path, id), res)
	if err != nil {
		return nil, fmt.Errorf("make cgroup: %w", err)
	}
	return &v2Job{m: m, id: id, dir: filepath.Join(g.mount, g.path, id)}, nil
}

type v2Job struct {
	m   *cgroup2.Manager
	id  string // its name: the run's
	dir string
}

func (j *v2Job) name() string { return j.id }

// start has the kernel create the process inside the cgroup, so there is
// no moment in which it runs outside.
func (j *v2Job) start(cmd *exec.Cmd) error {
	fd, err := unix.Open(j.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: open it: %w", errJobCgroup, err)
	}
	defer unix.Close(fd)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
	return cmd.Start()
}

func (j *v2Job) signal(sig syscall.Signal) {
	if sig == syscall.SIGKILL {
		_ = j.m.Kill()
		return
	}
	procs, _ := j.m.Procs(true)
	for _, p := range procs {
		_ = syscall.Kill(int(p), sig)
	}
}

func (j *v2Job) usage() cgroupUsage {
	var u cgroupUsage
	st, err := j.m.Stat()
	if err != nil {
		return u
	}
	if st.Memory != nil {
		u.peakMemory = st.Memory.MaxUsage
	}
	if st.CPU != nil {
		u.cpuSeconds = float64(st.CPU.UsageUsec) / 1e6
	}
	if st.MemoryEvents != nil {
		u.oomKills = st.MemoryEvents.OomKill
	}
	return u
}

func (j *v2Job) remove() (kept bool, err error) {
	err = killAll(func() (int, error) {
		procs, err := j.m.Procs(true)
		return len(procs), err
	}, func() { _ = j.m.Kill() })
	if err != nil {
		return false, err
	}
	return false, j.m.Delete()
}
