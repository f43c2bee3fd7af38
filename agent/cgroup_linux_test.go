package agent

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup1"
	"golang.org/x/sys/unix"

	"github.com/outpost-run/outpost/subjects"
)

// The v2 driver on whatever v2 hierarchy this machine has: the system's
// own, or the "unified" one beside v1 controllers, which holds no
// controllers, so limits are not asked of it. The job's process is born in
// the job's cgroup, so are its children wherever they go, a kill reaches
// all of them, and the CPU time they used is counted.
func TestCgroupV2PlacesAndKills(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: making cgroups needs root")
	}
	mount, need := "", []string{}
	for _, m := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(m, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			mount = m
			break
		}
	}
	if mount == "" {
		t.Skip("skipped: no cgroup v2 hierarchy is mounted")
	}
	g, err := newV2(mount, "v2test-"+strconv.Itoa(os.Getpid()), "", need)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.close)
	job, err := g.create("job", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `
		i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done
		sh -c 'setsid sleep 1000 & echo $! > orphan.pid'
		exec sleep 1000`)
	cmd.Dir = dir
	setProcAttr(cmd)
	if err := job.start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = job.remove() })
	want := filepath.Join(g.path, "job")
	if got := v2CgroupOf(t, cmd.Process.Pid); got != want {
		t.Errorf("the job's process is in %q, want %q", got, want)
	}
	var orphan int
	waitFor(t, "the orphan's pid", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "orphan.pid"))
		orphan, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	if got := v2CgroupOf(t, orphan); got != want {
		t.Errorf("the double-forked child is in %q, want %q", got, want)
	}
	waitFor(t, "the job's CPU time to be counted", func() bool { return job.usage().cpuSeconds > 0 })
	job.signal(syscall.SIGKILL)
	_ = cmd.Wait()
	waitFor(t, "the orphan to be gone", func() bool { return !alive(orphan) })
	if _, err := job.remove(); err != nil {
		t.Fatal(err)
	}
}

// The v1 driver lists, kills and removes what is in a job's cgroup, the
// cgroups the job made below it included, and reads the job's CPU time.
func TestCgroupV1ListsKillsRemoves(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: making cgroups needs root")
	}
	g, err := newV1("v1test-"+strconv.Itoa(os.Getpid()), "")
	if err != nil {
		t.Skipf("skipped: no cgroup v1 controllers (%v)", err)
	}
	t.Cleanup(g.close)
	cg, err := g.create("job", nil)
	if err != nil {
		t.Fatal(err)
	}
	job := cg.(*v1Job)
	cmd := exec.Command("sh", "-c", `i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 1000`)
	setProcAttr(cmd)
	if err := job.start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = job.remove() })
	// A cgroup of the job's own, below its cgroup, holding a process.
	sub := filepath.Join(job.dirs[cgroup1.Pids], "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	other := exec.Command("sleep", "1000")
	if err := job.start(other); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "cgroup.procs"), []byte(strconv.Itoa(other.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	procs, err := cgroupProcs(job.dirs[cgroup1.Pids])
	if err != nil || !slices.Contains(procs, cmd.Process.Pid) || !slices.Contains(procs, other.Process.Pid) {
		t.Errorf("the job's processes: %v (%v); want %d and %d", procs, err, cmd.Process.Pid, other.Process.Pid)
	}
	waitFor(t, "the job's CPU time to be counted", func() bool { return job.usage().cpuSeconds > 0 })
	if _, err := job.remove(); err != nil {
		t.Fatal(err)
	}
	_, _ = cmd.Wait(), other.Wait()
	for _, dir := range job.dirs {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", dir, err)
		}
	}
}

func v2CgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	return ""
}

// alive reports whether pid is a process that is not yet a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// A kept v1 cgroup takes the next run's limits, and lifts them again for a
// run without any; close removes it.
func TestCgroupV1ReuseSetsLimits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: making cgroups needs root")
	}
	g, err := newV1("v1reuse-"+strconv.Itoa(os.Getpid()), "")
	if err != nil {
		t.Skipf("skipped: no cgroup v1 controllers (%v)", err)
	}
	t.Cleanup(g.close)
	read := func(j *v1Job, c cgroup1.Name, file string) string {
		b, err := os.ReadFile(filepath.Join(j.dirs[c], file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	cg, err := g.create("one", nil)
	if err != nil {
		t.Fatal(err)
	}
	first := cg.(*v1Job)
	if _, err := first.remove(); err != nil {
		t.Fatal(err)
	}
	cg, err = g.create("two", &subjects.Limits{Memory: 32 << 20, CPU: 0.5, Pids: 4})
	if err != nil {
		t.Fatal(err)
	}
	j := cg.(*v1Job)
	if j.name() != first.name() || !strings.HasPrefix(j.name(), "slot-") {
		t.Fatalf("got cgroup %q, want %q again", j.name(), first.name())
	}
	want := map[string]string{"memory.limit_in_bytes": "33554432", "cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000", "pids.max": "5"}
	if g.swap {
		want["memory.memsw.limit_in_bytes"] = "33554432"
	}
	for file, v := range want {
		c := cgroup1.Name(strings.SplitN(file, ".", 2)[0])
		if got := read(j, c, file); got != v {
			t.Errorf("%s: %s, want %s", file, got, v)
		}
	}
	if _, err := j.remove(); err != nil {
		t.Fatal(err)
	}
	// Lifted as soon as it is kept: a quota the run spent would hold the
	// next run's starting thread until the period ends.
	if got := read(j, cgroup1.Cpu, "cpu.cfs_quota_us"); got != "-1" {
		t.Errorf("cpu.cfs_quota_us of a kept cgroup: %s, want -1", got)
	}
	cg, err = g.create("three", nil)
	if err != nil {
		t.Fatal(err)
	}
	j = cg.(*v1Job)
	if j.name() != first.name() || j.pids != "" {
		t.Fatalf("got cgroup %q (pids %q), want %q again without limits", j.name(), j.pids, first.name())
	}
	if got := read(j, cgroup1.Cpu, "cpu.cfs_quota_us"); got != "-1" {
		t.Errorf("cpu.cfs_quota_us: %s, want -1", got)
	}
	if got := read(j, cgroup1.Pids, "pids.max"); got != "max" {
		t.Errorf("pids.max: %s, want max", got)
	}
	if got, _ := strconv.ParseUint(read(j, cgroup1.Memory, "memory.limit_in_bytes"), 10, 64); got < 1<<40 {
		t.Errorf("memory.limit_in_bytes: %d, want none", got)
	}
	if _, err := j.remove(); err != nil {
		t.Fatal(err)
	}
	g.close()
	for _, dir := range j.dirs {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there after close (%v)", dir, err)
		}
	}
}
