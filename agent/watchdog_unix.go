//go:build unix

package agent

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
)

// watchdogScript keeps the set of the jobs' process groups that the agent
// writes to it ("+ PGID", "- PGID"), the directory of the agent's job
// cgroups ("c DIR") and the cgroups of jobs there ("j NAME", "u NAME";
// the agent lists a name once, see addJob). When its input
// ends, when the agent exits or dies, however it dies, it kills every
// group in its set and every process in those cgroups and the cgroups
// below them; a process forked while a pass read its cgroup is caught by
// the next pass.
// It kills no other cgroup there: another agent process of the same name,
// one that started while this one drained, has its own jobs.
const watchdogScript = `groups=" " jobs=" " cg=""
while read -r op g; do
  case "$op" in
    +) groups="$groups$g " ;;
    -) case "$groups" in *" $g "*) groups="${groups%% $g *} ${groups#* $g }" ;; esac ;;
    c) cg="$g" ;;
    j) jobs="$jobs$g " ;;
    u) case "$jobs" in *" $g "*) jobs="${jobs%% $g *} ${jobs#* $g }" ;; esac ;;
  esac
done
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
# killin kills what is in the cgroup at $1 and in those below it (v2 does
# it all at once with cgroup.kill).
killin() {
  [ -f "$1/cgroup.kill" ] && echo 1 > "$1/cgroup.kill" 2>/dev/null
  if [ -f "$1/cgroup.procs" ]; then
    while read -r p; do left=1; kill -s KILL "$p" 2>/dev/null; done < "$1/cgroup.procs"
  fi
  for d in "$1"/*/; do [ -d "$d" ] && killin "${d%/}"; done
}
n=0
while [ $n -lt 100 ]; do
  left=""
  for j in $jobs; do [ -d "$cg/$j" ] && killin "$cg/$j"; done
  [ -n "$left" ] || break
  n=$((n+1))
done
`

// gateScript holds a job, started as its arguments, until a line comes on
// fd 3, and gives up if none ever comes (its agent died).
const gateScript = `read -r _ <&3 || exit 125; exec 3<&-; exec "$@"`

// watchdog is a small shell process beside the agent that kills the jobs'
// process groups if the agent dies. The parent-death signal reaches only
// each job's first process (and macOS has none); what it started, a
// background child say, would live on without its agent. (On Windows a
// job object does this: watchdog_windows.go.)
type watchdog struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	in  io.WriteCloser
	// jobs are the job cgroups the watchdog was told of, by name, with
	// the runs in each (a kept cgroup stays listed with none).
	jobs map[string]int
}

// startWatchdog starts the watchdog in a process group of its own, so a
// signal meant for the agent's terminal does not end it first.
func startWatchdog() (*watchdog, error) {
	cmd := exec.Command("/bin/sh", "-c", watchdogScript)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the job watchdog: %w", err)
	}
	return &watchdog{cmd: cmd, in: in, jobs: map[string]int{}}, nil
}

// gate makes cmd, once started, wait until open(true), which tells the
// watchdog about its process group first: a child that the job started
// before that would outlive an agent dying at that moment. open is to be
// called once Start has returned; open(false), or the agent's death,
// makes the gate exit 125 without running the command.
func (w *watchdog) gate(cmd *exec.Cmd) (open func(run bool), err error) {
	if w == nil || cmd.Err != nil || !program(cmd.Path) {
		// Start fails by itself, or the shell would run what exec refuses.
		return func(bool) {}, nil
	}
	r, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, r) // fd 3
	cmd.Args = append([]string{"sh", "-c", gateScript, "outpost-job", cmd.Path}, cmd.Args[1:]...)
	cmd.Path = w.cmd.Path
	return func(run bool) {
		_ = r.Close()
		if run && cmd.Process != nil {
			w.add(cmd.Process.Pid)
			_, _ = wr.Write([]byte("\n"))
		}
		_ = wr.Close()
	}, nil
}

// add and remove tell the watchdog about a job's process group; the
// group's leader pid names it.
func (w *watchdog) add(pgid int)    { w.send("+ " + strconv.Itoa(pgid)) }
func (w *watchdog) remove(pgid int) { w.send("- " + strconv.Itoa(pgid)) }

// cgroups tells the watchdog the directory whose subdirectories are the
// jobs' cgroups. A job born inside its cgroup, which the watchdog was
// told of before, needs no gate: the watchdog finds all of it there,
// whatever process group or session it moved to.
func (w *watchdog) cgroups(dir string) { w.send("c " + dir) }

// addJob tells the watchdog about the cgroup of a run that starts, by its
// name under that directory, and removeJob that the run ended, and whether
// its cgroup was kept for a later run. A kept cgroup stays listed, empty,
// until a run that ends in it does not keep it: the watchdog hears of a
// kept v1 cgroup once, not twice for each run (two writes, and two
// wake-ups of the shell, on the way to every job's start and end), and
// killing in an empty one costs nothing. A cgroup is listed while any run
// is in it: a kept one that a second run takes up before the first run's
// removeJob stays listed.
func (w *watchdog) addJob(name string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, listed := w.jobs[name]; !listed {
		w.sendLocked("j " + name)
	}
	w.jobs[name]++
}

func (w *watchdog) removeJob(name string, kept bool) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.jobs[name]--; w.jobs[name] <= 0 && !kept {
		delete(w.jobs, name)
		w.sendLocked("u " + name)
	}
}

func (w *watchdog) send(line string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sendLocked(line)
}

func (w *watchdog) sendLocked(line string) { _, _ = io.WriteString(w.in, line+"\n") }

// stop ends the watchdog once no job runs: with an empty set it kills
// nothing.
func (w *watchdog) stop() {
	if w == nil {
		return
	}
	w.mu.Lock()
	_ = w.in.Close()
	w.mu.Unlock()
	_ = w.cmd.Wait()
}

// program reports whether path is an executable file that exec runs as
// it is: a binary (ELF, or Mach-O on macOS), or a script naming its
// interpreter.
func program(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return false
	}
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	if n >= 2 && string(head[:2]) == "#!" {
		return true
	}
	switch string(head[:n]) {
	case "\x7fELF", "\xcf\xfa\xed\xfe", "\xce\xfa\xed\xfe", "\xca\xfe\xba\xbe":
		return true
	}
	return false
}
