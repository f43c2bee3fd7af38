package agent

import (
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
)

// watchdogScript keeps the set of the jobs' process groups that the agent
// writes to it ("+ PGID", "- PGID"), and kills every group still in it
// when its input ends: when the agent exits, or dies, however it dies.
const watchdogScript = `groups=" "
while read -r op g; do
  case "$op" in
    +) groups="$groups$g " ;;
    -) case "$groups" in *" $g "*) groups="${groups%% $g *} ${groups#* $g }" ;; esac ;;
  esac
done
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
`

// watchdog is a small shell process beside the agent that kills the jobs'
// process groups if the agent dies. The parent-death signal reaches only
// each job's first process; what it started, a background child say,
// would live on without its agent.
type watchdog struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	in  io.WriteCloser
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
	return &watchdog{cmd: cmd, in: in}, nil
}

// add and remove tell the watchdog about a job's process group; the
// group's leader pid names it.
func (w *watchdog) add(pgid int)    { w.send("+", pgid) }
func (w *watchdog) remove(pgid int) { w.send("-", pgid) }

func (w *watchdog) send(op string, pgid int) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _ = io.WriteString(w.in, op+" "+strconv.Itoa(pgid)+"\n")
}

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
