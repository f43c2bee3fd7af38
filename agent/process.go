package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/outpost-run/outpost/secrets"
	"github.com/outpost-run/outpost/subjects"
)

// result is how a job's process ended.
type result struct {
	state    subjects.State
	exitCode *int
	err      string
	usage    subjects.Usage
	lines    int // how many lines the output numbered
}

// process is a running job's process group, and its cgroup if it has one.
type process struct {
	cmd   *exec.Cmd
	group procGroup
	cg    jobCgroup // nil without cgroups
	done  chan struct{}

	mu     sync.Mutex
	reason subjects.State // StateStopped or StateTimedOut once asked to end
}

// stop ends the group: SIGTERM, then SIGKILL after grace (at once when
// grace is zero). The first reason given is the one reported.
func (p *process) stop(reason subjects.State, grace time.Duration) {
	p.mu.Lock()
	if p.reason == "" {
		p.reason = reason
	}
	p.mu.Unlock()
	if grace <= 0 {
		p.kill()
		return
	}
	p.group.signal(syscall.SIGTERM)
	if p.cg != nil {
		// Processes that left the group (a daemon, a setsid) get the
		// same warning.
		p.cg.signal(syscall.SIGTERM)
	}
	go func() {
		select {
		case <-p.done:
		case <-time.After(grace):
			p.kill()
		}
	}()
}

// kill ends every process of the job at once: its group, and whatever is
// in its cgroup, having left the group or not.
func (p *process) kill() {
	p.group.signal(syscall.SIGKILL)
	if p.cg != nil {
		p.cg.signal(syscall.SIGKILL)
	}
}

// run starts the job's command in its own process group and work directory
// and streams its output until it ends. Secret values go into its
// environment and are masked in its output. The job's running report is on
// its way meanwhile: no output is sent, and no result returned, before it
// is stored; if it cannot be, the process is killed and run returns why.
func (a *Agent) run(ctx context.Context, job subjects.Job, attempt int, secretValues map[string]string, reported <-chan error) (result, error) {
	// This run's own name, for its cgroup: a job may run twice on one
	// agent at once (a redelivery while a cut-off run of it goes on), and
	// neither run's cleanup may touch the other's.
	run := job.ID + "." + strconv.FormatUint(a.runs.Add(1), 10)
	dir, release, err := a.workDir(job)
	if err != nil {
		return failed(-1, "work directory: %v", err), <-reported
	}
	// What is left of the job, its cgroup (and whatever still runs in it)
	// and its work directory, goes once its result is known, off the path
	// to its terminal status; the agent waits for it before it exits. The
	// work directory may serve a later run only once the cgroup was
	// emptied: nothing of this run can write into it then.
	emptied := false
	tidy := []func(){func() { release(emptied) }}
	defer func() {
		a.jobs.Add(1)
		go func() {
			defer a.jobs.Done()
			for i := len(tidy) - 1; i >= 0; i-- {
				tidy[i]()
			}
		}()
	}()
	cmd := exec.Command(job.Command[0], job.Command[1:]...)
	cmd.Dir = dir
	home := os.Getenv("HOME")
	if a.runAs != nil {
		home = a.runAs.home
	}
	cmd.Env = jobEnv(job, attempt, home, secretValues)
	if job.Stdin != "" {
		cmd.Stdin = strings.NewReader(job.Stdin)
		// A child that inherited stdin and never reads it must not keep the
		// job from ending once its main process has.
		cmd.WaitDelay = time.Second
	} else if a.devNull != nil {
		cmd.Stdin = a.devNull
	}
	setProcAttr(cmd)
	if a.runAs != nil {
		setUser(cmd, a.runAs)
	}
	var cg jobCgroup
	if a.cgroups != nil {
		cg, err = a.cgroups.create(run, job.Limits)
		switch {
		case err != nil && job.Limits != nil:
			return failed(-1, "cgroup for its limits: %v", err), <-reported
		case err != nil:
			// Nothing was asked that needs it: run as without cgroups.
			a.log.Warn("could not make the job's cgroup; it runs without one", "job", job.ID, "err", err)
			cg = nil
		}
	}
	if cg != nil {
		// A kept cgroup stays in the watchdog's sight, empty, for its next
		// run: the watchdog is told of a cgroup once, not of each run.
		name := cg.name()
		a.watch.addJob(name)
		tidy = append(tidy, func() {
			kept, err := cg.remove()
			if err != nil {
				a.log.Warn("could not remove the job's cgroup", "job", job.ID, "err", err)
			} else {
				emptied = true
			}
			a.watch.removeJob(name, kept)
		})
	}
	outR, outW, err := outputPipe()
	if err != nil {
		return failed(-1, "pipe: %v", err), <-reported
	}
	errR, errW, err := outputPipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return failed(-1, "pipe: %v", err), <-reported
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	// A job born inside its cgroup is in the watchdog's sight from its
	// first instruction, wherever its processes go, and the watchdog need
	// not know its process group. Without one, it waits at a gate until
	// the watchdog knows its process group, which costs an exec of the
	// shell; unwatch takes the group off the watchdog's list once the job
	// ended.
	open, unwatch := func(bool) {}, func() {}
	if cg != nil {
		err = cg.start(cmd)
	} else if open, err = a.watch.gate(cmd); err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return failed(-1, "pipe: %v", err), <-reported
	} else {
		err = cmd.Start()
		unwatch = func() { a.watch.remove(cmd.Process.Pid) }
	}
	outW.Close()
	errW.Close()
	open(err == nil)
	if err != nil {
		outR.Close()
		errR.Close()
		if errors.Is(err, errJobCgroup) {
			return failed(-1, "%v", err), <-reported
		}
		return startFailure(job.Command[0], err), <-reported
	}
	p := &process{cmd: cmd, group: newProcGroup(cmd.Process), cg: cg, done: make(chan struct{})}
	defer p.group.close()
	a.mu.Lock()
	a.running[job.ID] = p
	// A stop that came after the job was reported running, but before
	// its process was here to receive it, waits in a.stopped.
	pending, stopNow := a.takeStopLocked(job.ID)
	a.mu.Unlock()
	if stopNow {
		p.stop(subjects.StateStopped, pending.grace)
	}
	// Jobs killed by the agent's shutdown are handed back by execute.
	stopKill := context.AfterFunc(ctx, p.kill)
	defer stopKill()
	defer func() {
		a.mu.Lock()
		if a.running[job.ID] == p {
			delete(a.running, job.ID)
		}
		a.mu.Unlock()
	}()
	if job.Timeout > 0 {
		t := time.AfterFunc(time.Duration(job.Timeout), func() { p.stop(subjects.StateTimedOut, a.grace) })
		defer t.Stop()
	}
	if err := <-reported; err != nil {
		// Nothing of a job runs unrecorded: it goes back to the queue (or
		// stays with the run that recorded this attempt first).
		p.kill()
		_ = cmd.Wait()
		close(p.done)
		unwatch()
		outR.Close()
		errR.Close()
		return result{}, err
	}

	lines := make(chan line, lineQueue)
	read := lines // where the readers send
	if mask := secrets.NewMasker(secretValues); mask != nil {
		// Secret values never leave the agent: each line is masked
		// before the batcher sees it.
		read = make(chan line, lineQueue)
		go func() {
			defer close(lines)
			held := map[string][]byte{} // by stream: the tail of a line cut in chunks
			for l := range read {
				if l.partial {
					if l.text, held[l.stream] = mask.Chunk(held[l.stream], l.text); len(l.text) == 0 {
						continue
					}
				} else if h, ok := held[l.stream]; ok {
					l.text = mask.Line(append(h, l.text...))
					delete(held, l.stream)
				} else {
					l.text = mask.Line(l.text)
				}
				lines <- l
			}
			// Output that ended on a chunk's end, with no newline after.
			for _, stream := range []string{subjects.StreamStdout, subjects.StreamStderr} {
				if tail, ok := held[stream]; ok {
					lines <- line{stream: stream, text: mask.Line(tail)}
				}
			}
		}()
	}
	pub := newPublisher(a.js, a.room, a.conn.IsConnected, a.storeWithRetry)
	published := make(chan struct{})
	go func() { pub.run(ctx); close(published) }()
	b := &batcher{subject: subjects.EventSubject(job.Tag, job.Owner, job.ID, subjects.KindLog), job: job.ID, attempt: attempt,
		pub: pub, room: a.room, limit: a.maxOutput, stats: &a.stats}
	batched := make(chan struct{})
	go func() { b.run(lines); close(batched) }()
	var readers sync.WaitGroup
	for _, r := range []struct {
		f    *os.File
		name string
	}{{outR, subjects.StreamStdout}, {errR, subjects.StreamStderr}} {
		readers.Add(1)
		br := a.lineReaders.Get().(*bufio.Reader)
		br.Reset(r.f)
		go func() {
			defer readers.Done()
			readLines(br, r.name, read)
			br.Reset(nil) // holds on to no pipe while it waits for the next job
			a.lineReaders.Put(br)
		}()
	}

	werr := cmd.Wait()
	close(p.done)
	// Whatever the job left behind in its group, or its cgroup, dies with it.
	p.kill()
	unwatch()
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()
	select {
	case <-readersDone:
	case <-time.After(2 * time.Second):
		// A process that left the group still holds the pipes open.
		outR.Close()
		errR.Close()
		<-readersDone
	}
	outR.Close()
	errR.Close()
	close(read)
	<-batched
	<-published

	p.mu.Lock()
	reason := p.reason
	p.mu.Unlock()
	r := exitResult(cmd.ProcessState, werr, reason)
	r.usage = processUsage(cmd.ProcessState)
	r.lines = b.next - 1
	if cg != nil {
		u := cg.usage()
		if u.peakMemory > 0 {
			r.usage.PeakMemoryBytes = u.peakMemory
		}
		if u.cpuSeconds > 0 {
			r.usage.CPUSeconds = u.cpuSeconds
		}
		if u.oomKills > 0 && r.state == subjects.StateFailed {
			r.usage.Reason = subjects.ReasonOOMKilled
			r.err = "killed for running out of memory: the job reached its memory limit"
			if job.Limits != nil && job.Limits.Memory > 0 {
				r.err += " of " + job.Limits.Memory.String()
			}
		}
	}
	return r, nil
}

// processUsage is what the kernel counted for the job's main process and
// the children it waited for: all a job without a cgroup can report.
func processUsage(ps *os.ProcessState) subjects.Usage {
	if ps == nil {
		return subjects.Usage{}
	}
	cpu := ps.UserTime() + ps.SystemTime()
	return subjects.Usage{PeakMemoryBytes: maxRSS(ps), CPUSeconds: cpu.Seconds()}
}

func exitResult(ps *os.ProcessState, werr error, reason subjects.State) result {
	code := -1
	if ps != nil {
		code = ps.ExitCode()
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	}
	r := result{exitCode: &code}
	switch {
	case reason == subjects.StateStopped:
		r.state, r.err = reason, "stopped on request"
	case reason == subjects.StateTimedOut:
		r.state, r.err = reason, "ran past its timeout"
	case code == 0:
		r.state = subjects.StateSucceeded
	case ps == nil:
		r.state, r.err = subjects.StateFailed, fmt.Sprintf("wait: %v", werr)
	default:
		r.state = subjects.StateFailed
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.err = "killed by signal " + ws.Signal().String()
		} else {
			r.err = "exit status " + strconv.Itoa(code)
		}
	}
	return r
}

func failed(code int, format string, args ...any) result {
	return result{state: subjects.StateFailed, exitCode: &code, err: fmt.Sprintf(format, args...)}
}

// startFailure reports a command that could not start with the codes a
// shell uses: 127 for not found, 126 for not executable.
func startFailure(name string, err error) result {
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return failed(127, "command not found: %s", name)
	case errors.Is(err, fs.ErrPermission):
		return failed(126, "permission denied: %s", name)
	}
	return failed(126, "could not start %s: %v", name, err)
}

// workDir takes the run's own work directory, and returns the directory
// the job runs in: a relative spec dir lies inside the run's, an absolute
// one is used as it is. release gives the run's directory back; ended says
// that nothing of the run is left running.
func (a *Agent) workDir(job subjects.Job) (dir string, release func(ended bool), err error) {
	own, err := a.dirs.take()
	if err != nil {
		return "", nil, err
	}
	release = func(ended bool) { a.dirs.give(own, ended) }
	dir = own
	switch {
	case filepath.IsAbs(job.Dir):
		dir = job.Dir
	case job.Dir != "":
		dir = filepath.Join(own, job.Dir)
		if dir != own && !strings.HasPrefix(dir, own+string(filepath.Separator)) {
			release(true)
			return "", nil, fmt.Errorf("dir %q leaves the job's work directory", job.Dir)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			release(false)
			return "", nil, err
		}
	}
	if a.runAs != nil {
		if err := chownTree(own, a.runAs); err != nil {
			release(false)
			return "", nil, fmt.Errorf("give it to %s: %w", a.runAs.name, err)
		}
	}
	return dir, release, nil
}

// jobEnv is the job's whole environment: nothing of the agent's own but
// PATH, so the agent's secrets do not leak into jobs, HOME as given, and
// the job's own secrets over its env.
func jobEnv(job subjects.Job, attempt int, home string, secretValues map[string]string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	env := map[string]string{
		"PATH": path, "HOME": home,
		"OUTPOST_JOB_ID": job.ID, "OUTPOST_ATTEMPT": strconv.Itoa(attempt), "OUTPOST_TAG": job.Tag,
	}
	for _, k := range systemEnv() {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	for k, v := range job.Env {
		env[k] = v
	}
	for k, v := range secretValues {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}
