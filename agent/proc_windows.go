package agent

import (
	"os"
	"os/exec"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// setProcAttr gives the job a console process group of its own, so a
// Ctrl+C meant for the agent does not reach it.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: windows.CREATE_NEW_PROCESS_GROUP}
}

// procGroup is a job object holding the job's process and every process it
// starts. Windows has no signals to send to it: a stop terminates the
// whole tree at once, without a grace period. The job object is made to
// kill its processes when its last handle closes, so they also die with
// an agent that is killed outright. A process the job starts in the
// moment between its start and its assignment to the job object escapes.
type procGroup struct {
	job  windows.Handle // 0 when no job object could be made
	proc *os.Process
}

func newProcGroup(p *os.Process) procGroup {
	g := procGroup{proc: p}
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return g
	}
	info := windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION{}
	info.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
	if _, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
		_ = windows.CloseHandle(job)
		return g
	}
	h, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(p.Pid))
	if err != nil {
		_ = windows.CloseHandle(job)
		return g
	}
	defer windows.CloseHandle(h)
	if err := windows.AssignProcessToJobObject(job, h); err != nil {
		_ = windows.CloseHandle(job)
		return g
	}
	g.job = job
	return g
}

// signal ends the job's processes, whatever sig is: the whole job object,
// or without one the main process alone.
func (g procGroup) signal(syscall.Signal) {
	if g.job != 0 {
		_ = windows.TerminateJobObject(g.job, 1)
		return
	}
	// Safe after the process has been waited for: os.Process knows it
	// is done and touches no reused pid.
	_ = g.proc.Kill()
}

func (g procGroup) close() {
	if g.job != 0 {
		_ = windows.CloseHandle(g.job)
	}
}

// systemEnv names what a job gets of the agent's environment besides PATH
// and HOME: without these, Windows programs fail in odd ways (no sockets
// without SystemRoot, no temporary files without TEMP).
func systemEnv() []string {
	return []string{"SystemRoot", "windir", "ComSpec", "PATHEXT", "TEMP", "TMP", "USERPROFILE", "SystemDrive", "ProgramData"}
}

// maxRSS is not counted on Windows.
func maxRSS(*os.ProcessState) uint64 { return 0 }

// outputPipe is a pipe for a job's output: the agent reads r, and w goes
// to the job.
func outputPipe() (r, w *os.File, err error) { return os.Pipe() }
