package agent

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts the job in a process group of its own, so a stop reaches
// every process it started, and has the kernel kill it if the agent dies.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
