package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// proc is a binary the bench started. Its output goes to a log file of its
// own; the lines that match the patterns it was started with are kept, so
// the bench can wait for "ready" or read an address it printed.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	cancel context.CancelFunc // SIGTERM, then SIGKILL after procGrace
	done   chan struct{}      // closed once it has exited

	mu      sync.Mutex
	watch   []*regexp.Regexp
	matches map[*regexp.Regexp][]string
	changed chan struct{} // closed and replaced whenever a pattern matches
}

// startProc runs the binary at path with args, its output in logPath, and
// keeps the first match of each pattern in watch.
func startProc(path, logPath string, watch []*regexp.Regexp, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("log of %s: %w", filepath.Base(path), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{name: filepath.Base(path), log: logPath, cancel: cancel, done: make(chan struct{}),
		watch: watch, matches: map[*regexp.Regexp][]string{}, changed: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, path, args...)
	p.cmd.Cancel = func() error { return p.cmd.Process.Signal(syscall.SIGTERM) }
	p.cmd.WaitDelay = procGrace
	p.cmd.Env = cleanEnv()
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		cancel()
		f.Close()
		return nil, err
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		cancel()
		f.Close()
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	go func() {
		defer close(p.done)
		defer f.Close()
		p.scan(stdout, f)
		_ = p.cmd.Wait()
	}()
	return p, nil
}

// cleanEnv is the bench's environment without Outpost and NATS settings,
// which must not steer the binaries under measurement.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OUTPOST_") && !strings.HasPrefix(kv, "NATS_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *proc) scan(r io.Reader, w io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(w, line)
		p.mu.Lock()
		for _, re := range p.watch {
			if _, seen := p.matches[re]; seen {
				continue
			}
			if m := re.FindStringSubmatch(line); m != nil {
				p.matches[re] = m
				close(p.changed)
				p.changed = make(chan struct{})
			}
		}
		p.mu.Unlock()
	}
	// Whatever is left unread (a line past the scanner's cap) still drains,
	// so the process never blocks on a full pipe.
	_, _ = io.Copy(w, r)
}

// await returns the first match of re, which must be one of the patterns
// the process was started with, waiting for it until ctx ends or the
// process exits.
func (p *proc) await(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	for {
		p.mu.Lock()
		m, changed := p.matches[re], p.changed
		p.mu.Unlock()
		if m != nil {
			return m, nil
		}
		select {
		case <-changed:
		case <-p.done:
			return nil, fmt.Errorf("%s exited before printing %q (see %s)", p.name, re, p.log)
		case <-ctx.Done():
			return nil, fmt.Errorf("%s did not print %q (see %s): %w", p.name, re, p.log, ctx.Err())
		}
	}
}

// stop sends SIGTERM and waits for the exit; a process that takes longer
// than procGrace is killed.
func (p *proc) stop() {
	p.cancel()
	<-p.done
}

// usage is what the kernel says of a process: its CPU time so far and its
// resident memory.
type usage struct {
	cpu time.Duration
	rss int64 // bytes
}

func (p *proc) usage() (usage, error) {
	fs, err := procfs.NewProc(p.cmd.Process.Pid)
	if err != nil {
		return usage{}, fmt.Errorf("read /proc of %s: %w", p.name, err)
	}
	st, err := fs.Stat()
	if err != nil {
		return usage{}, fmt.Errorf("read /proc of %s: %w", p.name, err)
	}
	status, err := fs.NewStatus()
	if err != nil {
		return usage{}, fmt.Errorf("read /proc of %s: %w", p.name, err)
	}
	return usage{cpu: time.Duration(st.CPUTime() * float64(time.Second)), rss: int64(status.VmRSS)}, nil
}

// idle samples the process for window: its share of one core over the
// window, and its largest resident set seen.
func (p *proc) idle(ctx context.Context, window time.Duration) (cpuPercent float64, rss int64, err error) {
	first, err := p.usage()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	rss = first.rss
	tick := time.NewTicker(window / 10)
	defer tick.Stop()
	last, elapsed := first, time.Duration(0)
	for elapsed < window {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
		if last, err = p.usage(); err != nil {
			return 0, 0, err
		}
		elapsed = time.Since(start)
		rss = max(rss, last.rss)
	}
	return 100 * float64(last.cpu-first.cpu) / float64(elapsed), rss, nil
}
