//go:build unix && !linux

package agent

import (
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
