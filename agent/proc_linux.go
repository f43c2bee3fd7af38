package agent

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcAttr puts the job in a process group of its own, so a stop reaches
// every process it started, and has the kernel kill it if the agent dies.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// maxRSS is the largest resident set of the process or of a child it
// waited for; Linux counts it in KiB.
func maxRSS(ps *os.ProcessState) uint64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > 0 {
		return uint64(ru.Maxrss) << 10
	}
	return 0
}
