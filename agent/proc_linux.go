package agent

import (
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
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

// outputPipe is a pipe for a job's output: the agent reads r through the
// runtime's poller, and w goes to the job. os.Pipe would register w with
// the poller too, only for os/exec to set it blocking again for the child
// and the close to unregister it: three system calls more for each end
// each run, for an end the agent never touches.
func outputPipe() (r, w *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, os.NewSyscallError("pipe2", err)
	}
	if err := unix.SetNonblock(p[0], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, nil, os.NewSyscallError("setnonblock", err)
	}
	// NewFile polls a non-blocking descriptor and leaves a blocking one be.
	return os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1"), nil
}
