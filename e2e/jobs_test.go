package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/internal/testenv"
)

// TestRunStreamsOutputAndExitsLikeTheJob: 'outpost run' prints the job's
// stdout on stdout and its stderr on stderr, exits with the job's code, and
// the job sees a clean environment plus what --env and --stdin give it.
func TestRunStreamsOutputAndExitsLikeTheJob(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{env: []string{"AGENT_SECRET=hush"}})

	r := c.admin.outpost(t, "run", "--tag", "local", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3")
	if r.code != 3 || r.stdout != "hi\n" || r.stderr != "oops\n" {
		t.Errorf("run: want exit 3, stdout \"hi\\n\", stderr \"oops\\n\"; got\n%s", r)
	}

	r = c.admin.outpost(t, "run", "--tag", "local", "--", "echo", "hi")
	if r.code != 0 || r.stdout != "hi\n" || r.stderr != "" {
		t.Errorf("run echo hi: want exit 0 and \"hi\\n\"; got\n%s", r)
	}

	// The agent's own environment (AGENT_SECRET) must not reach the job.
	r = c.admin.mustOutpost(t, "run", "--tag", "local", "--env", "GREETING=hello", "--", "env")
	env := strings.Split(strings.TrimSpace(r.stdout), "\n")
	for _, want := range []string{"GREETING=hello", "OUTPOST_TAG=local", "OUTPOST_ATTEMPT=1"} {
		if !slices.Contains(env, want) {
			t.Errorf("job environment lacks %s:\n%s", want, r.stdout)
		}
	}
	if !regexp.MustCompile(`(?m)^OUTPOST_JOB_ID=[0-9a-z]{26}$`).MatchString(r.stdout) {
		t.Errorf("job environment lacks OUTPOST_JOB_ID:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "AGENT_SECRET") {
		t.Errorf("the agent's environment leaked into the job:\n%s", r.stdout)
	}

	// A relative --dir lies inside the job's own work directory, and may
	// not leave it.
	r = c.admin.outpost(t, "run", "--tag", "local", "--dir", "sub", "--", "pwd")
	if r.code != 0 || !strings.HasSuffix(r.stdout, "/sub\n") {
		t.Errorf("run --dir sub -- pwd:\n%s", r)
	}
	r = c.admin.outpost(t, "run", "--tag", "local", "--dir", "../out", "--", "pwd")
	if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "leaves the job's work directory") {
		t.Errorf("run --dir ../out: want the job refused\n%s", r)
	}

	in := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(in, []byte("line one\nline two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = c.admin.outpost(t, "run", "--tag", "local", "--stdin", in, "--", "cat")
	if r.code != 0 || r.stdout != "line one\nline two\n" {
		t.Errorf("run --stdin FILE -- cat: want the file back; got\n%s", r)
	}
}

// TestLogsReplaysEveryLine: a detached job's output is kept, and 'outpost
// logs' replays every line from the first, once and in order, stdout and
// stderr each to its own stream, a line longer than the 32 KiB split
// included.
func TestLogsReplaysEveryLine(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{})
	const n = 200
	script := writeScript(t, `
i=1
while [ $i -le `+strconv.Itoa(n)+` ]; do
	echo "out $i"
	echo "err $i" >&2
	i=$((i+1))
done
head -c 100000 /dev/zero | tr '\0' x
echo
`)
	id := c.admin.submit(t, "--tag", "local", "--", "sh", script)
	rec := c.admin.waitState(t, id)
	if rec.State != "succeeded" {
		t.Fatalf("job ended %s (%s), want succeeded", rec.State, rec.Error)
	}

	var wantOut, wantErr []string
	for i := 1; i <= n; i++ {
		wantOut = append(wantOut, fmt.Sprintf("out %d", i))
		wantErr = append(wantErr, fmt.Sprintf("err %d", i))
	}
	wantOut = append(wantOut, strings.Repeat("x", 100000))

	r := c.admin.mustOutpost(t, "logs", id)
	compareLines(t, "stdout", r.stdout, wantOut)
	compareLines(t, "stderr", r.stderr, wantErr)
}

// compareLines checks that out is exactly want, one line each, and names
// the first difference rather than printing 100 KB.
func compareLines(t *testing.T, name, out string, want []string) {
	t.Helper()
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("%s does not end in a newline", name)
	}
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			t.Errorf("%s: %d lines, want %d; missing from line %d: %.40q", name, len(got), len(want), i+1, want[i])
			return
		case i >= len(want):
			t.Errorf("%s: %d lines, want %d; extra line %d: %.40q", name, len(got), len(want), i+1, got[i])
			return
		case got[i] != want[i]:
			t.Errorf("%s line %d: got %.40q (%d bytes), want %.40q (%d bytes)", name, i+1, got[i], len(got[i]), want[i], len(want[i]))
			return
		}
	}
}

// TestLogsFollowsARunningJob: 'logs -f' shows what a running job printed so
// far, then what it prints next, and returns when the job ends.
func TestLogsFollowsARunningJob(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{})
	gate := filepath.Join(t.TempDir(), "gate")
	id := c.admin.submit(t, "--tag", "local", "--env", "GATE="+gate, "--",
		"sh", "-c", `echo start; while [ ! -e "$GATE" ]; do sleep 0.02; done; echo end >&2; echo done`)

	f := c.admin.startOutpost(t, "logs", "-f", id)
	testenv.EventuallyWithin(t, jobTimeout, "logs -f to show the first line", func() bool {
		return f.stdout.String() == "start\n" || f.exited()
	})
	if f.exited() {
		t.Fatalf("logs -f returned while the job was running:\nstdout: %q\nstderr: %q", f.stdout.String(), f.stderr.String())
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code := f.wait(t, jobTimeout)
	if code != 0 || f.stdout.String() != "start\ndone\n" || f.stderr.String() != "end\n" {
		t.Errorf("logs -f: want exit 0, stdout \"start\\ndone\\n\", stderr \"end\\n\"; got exit %d, %q, %q", code, f.stdout.String(), f.stderr.String())
	}
}

// TestStatusAndList: 'status' shows state, exit code, agent, attempt and
// times; 'ls' lists newest first and filters by tag and state, as text and
// as JSON.
func TestStatusAndList(t *testing.T) {
	t.Parallel()
	// A credential for tag b makes the tag known; no agent of b runs, so a
	// job for b stays queued.
	c := startCoordinator(t, coordOptions{creds: []accounts.Request{{Name: "agent-b", Role: accounts.RoleAgent, Tags: []string{"b"}}}})
	ok := c.admin.submit(t, "--tag", "local", "--", "true")
	bad := c.admin.submit(t, "--tag", "local", "--", "sh", "-c", "exit 3")
	queued := c.admin.submit(t, "--tag", "b", "--", "true")
	c.admin.waitState(t, ok)
	c.admin.waitState(t, bad)

	r := c.admin.mustOutpost(t, "status", bad)
	for _, want := range []string{
		`job:\s+` + bad, `state:\s+failed`, `exit code:\s+3`, `error:\s+exit status 3`, `tag:\s+local`,
		`owner:\s+admin`, `agent:\s+local-agent`, `attempt:\s+1 of 3`, `command:\s+sh -c 'exit 3'`,
		`submitted:\s+\d{4}-`, `started:\s+\d{4}-`, `finished:\s+\d{4}-.*\(ran `,
	} {
		if !regexp.MustCompile(`(?m)^` + want + `.*$`).MatchString(r.stdout) {
			t.Errorf("status %s lacks %q:\n%s", bad, want, r.stdout)
		}
	}

	rec := c.admin.status(t, ok)
	if rec.ID != ok || rec.State != "succeeded" || exitCode(rec.ExitCode) != "0" || rec.Agent != "local-agent" ||
		rec.Attempt != 1 || rec.Owner != "admin" || rec.Tag != "local" || rec.StartedAt == nil || rec.FinishedAt == nil {
		t.Errorf("status -o json of a finished job: %+v", rec)
	} else if rec.StartedAt.Before(rec.SubmittedAt) || rec.FinishedAt.Before(*rec.StartedAt) {
		t.Errorf("times out of order: submitted %s, started %s, finished %s", rec.SubmittedAt, rec.StartedAt, rec.FinishedAt)
	}
	rec = c.admin.status(t, queued)
	if rec.State != "queued" || rec.Agent != "" || rec.ExitCode != nil || rec.StartedAt != nil {
		t.Errorf("status -o json of a queued job: %+v", rec)
	}

	for _, tc := range []struct {
		filters []string
		want    []string
	}{
		{nil, []string{queued, bad, ok}}, // newest first
		{[]string{"--tag", "b"}, []string{queued}},
		{[]string{"--tag", "local"}, []string{bad, ok}},
		{[]string{"--state", "failed"}, []string{bad}},
		{[]string{"--state", "succeeded", "--tag", "local"}, []string{ok}},
		{[]string{"--state", "queued"}, []string{queued}},
		{[]string{"--state", "running"}, nil},
		{[]string{"-n", "1"}, []string{queued}},
	} {
		var got []string
		for _, rec := range c.admin.list(t, tc.filters...) {
			got = append(got, rec.ID)
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("ls %s: got %v, want %v", strings.Join(tc.filters, " "), got, tc.want)
		}
	}
	// An empty list is still a JSON array, not null.
	if r := c.admin.mustOutpost(t, "ls", "--state", "running", "-o", "json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("ls -o json with no match printed %q, want []", r.stdout)
	}

	r = c.admin.mustOutpost(t, "ls", "--tag", "local")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "JOB") || !strings.HasPrefix(lines[1], bad) || !strings.HasPrefix(lines[2], ok) {
		t.Errorf("ls --tag local as text:\n%s", r.stdout)
	}

	r = c.admin.outpost(t, "ls", "--state", "done")
	if r.code == 0 || !strings.Contains(r.stderr, `unknown state "done"`) {
		t.Errorf("ls --state done: want an error naming the state\n%s", r)
	}
}

// TestStopSignalsTheProcessGroup: 'stop' sends SIGTERM to the job's whole
// process group: the job's trap runs and sets its exit code, and a child
// in the group gets the signal too and is gone afterwards.
func TestStopSignalsTheProcessGroup(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{})
	dir := t.TempDir()
	childPID, ready := filepath.Join(dir, "child.pid"), filepath.Join(dir, "ready")
	// The child traps TERM itself, so its line proves that the signal
	// reached the group and not only the job's own process.
	script := writeScript(t, `
sh -c 'trap "echo child got TERM; exit 0" TERM; echo $$ > "$CHILD_PID.tmp"; mv "$CHILD_PID.tmp" "$CHILD_PID"; while :; do sleep 0.05; done' &
trap 'echo parent got TERM; wait; exit 42' TERM
echo ready
: > "$READY"
wait
`)
	id := c.admin.submit(t, "--tag", "local", "--env", "CHILD_PID="+childPID, "--env", "READY="+ready, "--", "sh", script)
	testenv.EventuallyWithin(t, jobTimeout, "the job and its child to set their traps", func() bool {
		return fileExists(ready) && fileExists(childPID)
	})
	b, err := os.ReadFile(childPID)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("child pid file: %q", b)
	}

	// The record says running a moment after the job started: a stop before
	// that would treat the job as still queued, and record no exit code.
	c.admin.waitState(t, id, "running")
	r := c.admin.mustOutpost(t, "stop", "--wait", id)
	if want := fmt.Sprintf("job %s: stop sent to its agent\njob %s stopped\n", id, id); r.stdout != want {
		t.Errorf("stop --wait printed %q, want %q", r.stdout, want)
	}
	// The record follows the events a moment later.
	rec := c.admin.waitState(t, id)
	if rec.State != "stopped" || exitCode(rec.ExitCode) != "42" || rec.Error != "stopped on request" {
		t.Errorf("stopped job: state %s, exit code %s, error %q; want stopped, 42 (its trap's), \"stopped on request\"", rec.State, exitCode(rec.ExitCode), rec.Error)
	}
	r = c.admin.mustOutpost(t, "logs", id)
	for _, want := range []string{"ready", "child got TERM", "parent got TERM"} {
		if !slices.Contains(strings.Split(r.stdout, "\n"), want) {
			t.Errorf("logs lack %q:\n%s", want, r.stdout)
		}
	}
	if alive(pid) {
		t.Errorf("the job's child (pid %d) is still running after the job was stopped", pid)
	}

	r = c.admin.outpost(t, "stop", id)
	if r.code == 0 || !strings.Contains(r.stderr, "already ended") {
		t.Errorf("stop of an ended job: want an error saying it already ended\n%s", r)
	}
}

// alive reports whether pid is a process that has not exited: a zombie
// waiting for its parent counts as gone.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// The state follows the parenthesised command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// TestStopForceAndGrace: a job that ignores SIGTERM is killed at once by
// 'stop --force', and after the grace period by 'stop --grace'; both
// record exit code 137, and 'run' following the job exits 137 too.
func TestStopForceAndGrace(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{})
	script := writeScript(t, `
trap '' TERM
echo ready
: > "$READY"
while :; do sleep 0.05; done
`)

	ready := filepath.Join(t.TempDir(), "ready")
	run := c.admin.startOutpost(t, "run", "--tag", "local", "--env", "READY="+ready, "--", "sh", script)
	testenv.EventuallyWithin(t, jobTimeout, "the job to ignore SIGTERM", func() bool { return fileExists(ready) })
	// The coordinator folds the agent's running event into the record a
	// moment after the job starts; a stop before that would treat the job
	// as still queued, and record no exit code.
	var running []jobRecord
	testenv.EventuallyWithin(t, jobTimeout, "ls to show the job running", func() bool {
		running = c.admin.list(t, "--state", "running")
		return len(running) == 1
	})
	id := running[0].ID
	c.admin.mustOutpost(t, "stop", "--force", id)
	if code := run.wait(t, jobTimeout); code != 137 || run.stdout.String() != "ready\n" || !strings.Contains(run.stderr.String(), "stopped") {
		t.Errorf("run of a force-stopped job: want exit 137, stdout \"ready\\n\" and a note that it was stopped; got exit %d, %q, %q", code, run.stdout.String(), run.stderr.String())
	}
	if rec := c.admin.waitState(t, id); rec.State != "stopped" || exitCode(rec.ExitCode) != "137" {
		t.Errorf("force-stopped job: state %s, exit code %s; want stopped, 137", rec.State, exitCode(rec.ExitCode))
	}

	ready = filepath.Join(t.TempDir(), "ready")
	id = c.admin.submit(t, "--tag", "local", "--env", "READY="+ready, "--", "sh", script)
	testenv.EventuallyWithin(t, jobTimeout, "the job to ignore SIGTERM", func() bool { return fileExists(ready) })
	c.admin.waitState(t, id, "running")
	c.admin.mustOutpost(t, "stop", "--grace", "200ms", id)
	if rec := c.admin.waitState(t, id); rec.State != "stopped" || exitCode(rec.ExitCode) != "137" {
		t.Errorf("job that ignored SIGTERM past its grace: state %s, exit code %s; want stopped, 137", rec.State, exitCode(rec.ExitCode))
	}
}

// TestTimeout: a job that outlives --timeout is stopped and ends
// timed_out, and 'run' exits 124 as timeout(1) does.
func TestTimeout(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{})
	r := c.admin.outpost(t, "run", "--tag", "local", "--timeout", "1s", "--", "sh", "-c", "echo start; while :; do sleep 0.05; done")
	if r.code != 124 || r.stdout != "start\n" || !strings.Contains(r.stderr, "timed_out") {
		t.Errorf("run --timeout: want exit 124, stdout \"start\\n\" and a note that it timed out; got\n%s", r)
	}
	// The record follows the events 'run' saw a moment later.
	var recs []jobRecord
	testenv.EventuallyWithin(t, jobTimeout, "the job's record to say timed_out", func() bool {
		recs = c.admin.list(t, "--state", "timed_out")
		return len(recs) > 0
	})
	if len(recs) != 1 || recs[0].ExitCode == nil || recs[0].FinishedAt == nil {
		t.Errorf("ls --state timed_out: %+v, want the one job, with its exit code and end time", recs)
	}
}

// TestStopQueuedJobNeverRuns: a job stopped while no agent had taken it is
// marked stopped and taken off the queue: an agent that starts later runs
// the jobs queued after it but never that one.
func TestStopQueuedJobNeverRuns(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{noLocalAgent: true})
	mark := filepath.Join(t.TempDir(), "ran")
	id := c.admin.submit(t, "--tag", "local", "--", "touch", mark)
	if rec := c.admin.status(t, id); rec.State != "queued" {
		t.Fatalf("with no agent the job is %s, want queued", rec.State)
	}
	r := c.admin.mustOutpost(t, "stop", id)
	if want := "job " + id + " stopped\n"; r.stdout != want {
		t.Errorf("stop of a queued job printed %q, want %q", r.stdout, want)
	}
	if rec := c.admin.status(t, id); rec.State != "stopped" || rec.Agent != "" || !strings.Contains(rec.Error, "before it started") {
		t.Errorf("queued job after stop: %+v", rec)
	}

	// The agent takes jobs in queue order, one at a time: once the later
	// job has run, the stopped one would have run before it.
	c.startAgent(t, "local-agent")
	r = c.admin.outpost(t, "run", "--tag", "local", "--", "echo", "later")
	if r.code != 0 || r.stdout != "later\n" {
		t.Fatalf("a job queued after the stopped one: want exit 0 and \"later\\n\"; got\n%s", r)
	}
	if fileExists(mark) {
		t.Errorf("the stopped job ran: %s exists", mark)
	}
	if rec := c.admin.status(t, id); rec.State != "stopped" || rec.Agent != "" {
		t.Errorf("stopped job changed after an agent started: %+v", rec)
	}
}

// TestJobOfALostAgentRunsAgain: when the agent running a job dies, its
// process group dies with it (a background child too), and once the ack wait passes another agent of
// the tag runs the job as a later attempt, which 'status' and 'logs' show.
func TestJobOfALostAgentRunsAgain(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{noLocalAgent: true, args: []string{"--ack-wait", "1s"}})
	dir := t.TempDir()
	first := c.startAgent(t, "local-agent")
	id := c.admin.submit(t, "--tag", "local", "--env", "DIR="+dir, "--max-attempts", "5", "--", "sh", "-c",
		`echo "attempt $OUTPOST_ATTEMPT"; sleep 600 >/dev/null 2>&1 & echo $! > "$DIR/child.$OUTPOST_ATTEMPT"; setsid sleep 600 >/dev/null 2>&1 & echo $! > "$DIR/escaped.$OUTPOST_ATTEMPT"; echo $$ > "$DIR/pid.$OUTPOST_ATTEMPT"; while [ ! -e "$DIR/gate" ]; do sleep 0.02; done; echo done`)
	pidFile := filepath.Join(dir, "pid.1")
	// The shell creates the file before it writes the pid into it.
	testenv.EventuallyWithin(t, jobTimeout, "the first attempt to write its pid", func() bool {
		b, err := os.ReadFile(pidFile)
		_, aerr := strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && aerr == nil
	})
	c.admin.waitState(t, id, "running")
	first.kill(t)

	c.startAgent(t, "local-agent")
	testenv.EventuallyWithin(t, jobTimeout, "a later attempt to start", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "pid.*"))
		return len(m) > 1
	})
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || alive(pid) {
		t.Errorf("the first attempt's process (%q) outlived its agent", b)
	}
	children := map[string]string{"child.1": "background child"}
	// A child that left the job's process group (setsid) is found in the
	// job's cgroup, where the agent has cgroups.
	if !strings.Contains(first.stderr.String(), "cgroups=none") {
		children["escaped.1"] = "child in a session of its own"
	}
	for file, what := range children {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		testenv.EventuallyWithin(t, stopTimeout, "the first attempt's "+what+" to die with its agent", func() bool { return !alive(pid) })
	}
	if err := os.WriteFile(filepath.Join(dir, "gate"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rec := c.admin.waitState(t, id)
	if rec.State != "succeeded" || rec.Attempt < 2 || rec.Agent != "local-agent" {
		t.Errorf("job of a lost agent: %s at attempt %d on %q, want succeeded at a later attempt", rec.State, rec.Attempt, rec.Agent)
	}
	r := c.admin.mustOutpost(t, "logs", id)
	want := fmt.Sprintf("attempt 1\nattempt %d\ndone\n", rec.Attempt)
	if r.stdout != want || !strings.Contains(r.stderr, fmt.Sprintf("attempt %d on agent local-agent", rec.Attempt)) {
		t.Errorf("logs of a job run twice: want stdout %q and a note of the new attempt; got\n%s", want, r)
	}
}
