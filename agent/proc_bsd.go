//go:build unix && !linux

package agent

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcAttr puts the job in a process group of its own, so a stop reaches
// every process it started. These kernels have no parent-death signal: a
// job outlives an agent that is killed outright (one that exits on a
// signal stops its jobs first).
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// maxRSS is the largest resident set of the process or of a child it
// waited for; these kernels count it in bytes.
func maxRSS(ps *os.ProcessState) uint64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > 0 {
		return uint64(ru.Maxrss)
	}
	return 0
}

// outputPipe is a pipe for a job's output: the agent reads r, and w goes
// to the job.
func outputPipe() (r, w *os.File, err error) { return os.Pipe() }
