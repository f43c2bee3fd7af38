package agent

import (
	"errors"
	"os/exec"
	"syscall"

	"github.com/outpost-run/outpost/subjects"
)

// cgroupHost makes a cgroup for each job, under a cgroup of the agent's own.
// It is nil on an agent that cannot make them.
type cgroupHost interface {
	// version is "v1" or "v2".
	version() string
	// create gives run id a cgroup with its limits (nil: none): a new one,
	// or (v1) an empty one an earlier run left, named for neither.
	create(id string, limits *subjects.Limits) (jobCgroup, error)
	// close removes the cgroups kept for reuse, and then the agent's own
	// once it is empty.
	close()
	// jobsDir is the directory, in one hierarchy, whose subdirectories
	// are the jobs' cgroups.
	jobsDir() string
}

// jobCgroup is one job's cgroup: every process the job starts is in it,
// whatever process group or session it moves to.
type jobCgroup interface {
	// name is the cgroup's directory name under jobsDir, which the
	// watchdog is told of.
	name() string
	// start starts cmd with its process inside the cgroup before the
	// command runs anything.
	start(cmd *exec.Cmd) error
	// signal sends sig to every process in the cgroup. SIGKILL reaches
	// each one, even a process forking at that moment.
	signal(sig syscall.Signal)
	// usage reads what the job used so far.
	usage() cgroupUsage
	// remove kills whatever is left and removes the cgroup, or (v1) keeps
	// it for a later run once it is empty, and reports whether it kept it.
	remove() (kept bool, err error)
}

// cgroupUsage is what a job's cgroup counted. A zero field was not counted.
type cgroupUsage struct {
	peakMemory uint64
	cpuSeconds float64
	oomKills   uint64
}

// CgroupOptions say where an agent makes its jobs' cgroups.
type CgroupOptions struct {
	// Disabled runs jobs without cgroups: jobs that ask for limits go back
	// to the queue for another agent.
	Disabled bool
	// Parent is the cgroup under which the agent makes its own
	// (outpost-<agent>), as a path inside the cgroup hierarchy such as
	// "/outpost". Empty means the agent's own cgroup. On cgroup v2 it must
	// be one where the agent may enable the memory, cpu and pids
	// controllers for children: the root, or a delegated cgroup holding no
	// process.
	Parent string
}

// errJobCgroup marks a job's start that failed in its cgroup rather than
// in the exec: its error says nothing about the command.
var errJobCgroup = errors.New("the job's cgroup")
