//go:build unix

package agent

import (
	"os"
	"syscall"
)

// procGroup is a job's process group, named by its leader's pid.
type procGroup struct{ pid int }

func newProcGroup(p *os.Process) procGroup { return procGroup{pid: p.Pid} }

// signal sends sig to every process in the group.
func (g procGroup) signal(sig syscall.Signal) { _ = syscall.Kill(-g.pid, sig) }

func (g procGroup) close() {}

// systemEnv names what a job gets of the agent's environment besides PATH
// and HOME: nothing.
func systemEnv() []string { return nil }
