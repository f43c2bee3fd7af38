package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/internal/testenv"
)

// halves is a job script that prints "$NAME line 1" to "$NAME line $N",
// writes $DIR/$NAME.half, waits for $DIR/gate, and prints lines N+1 to 2N.
const halves = `seq 1 "$N" | sed "s/^/$NAME line /"
touch "$DIR/$NAME.half"
while [ ! -e "$DIR/gate" ]; do sleep 0.02; done
seq $((N + 1)) $((2 * N)) | sed "s/^/$NAME line /"
`

// TestRestartsMidRun: jobs are running on two agents, and a follower
// ('outpost logs -f') is attached, when the coordinator is SIGKILLed
// (taking its embedded server with it) or, on a stock nats-server, when
// the server is SIGKILLed under the attached coordinator. The jobs print
// on while NATS is gone. Once it is back on the same data directory the
// agents, the coordinator and the follower reconnect and resume: every job
// ends succeeded as its first attempt, every line is stored once and in
// order, and the follower printed each exactly once.
func TestRestartsMidRun(t *testing.T) {
	t.Parallel()
	t.Run("coordinator killed", func(t *testing.T) {
		t.Parallel()
		c := startCoordinator(t, coordOptions{noLocalAgent: true,
			creds: []accounts.Request{{Name: "agent-2", Role: accounts.RoleAgent, Tags: []string{"local"}}},
			// The same port after the restart, where agents and followers
			// look for it.
			args: []string{"--listen", "127.0.0.1:" + strconv.Itoa(freePort(t))}})
		runThroughRestart(t, c, func() {
			c.proc.kill(t)
		}, func() { c.start(t) })
	})
	t.Run("server killed", func(t *testing.T) {
		requireNATSTools(t)
		t.Parallel()
		data := filepath.Join(t.TempDir(), "data")
		srv := newStockServer(t, data)
		c := startCoordinator(t, coordOptions{data: data, natsURL: srv.url, noLocalAgent: true,
			creds: []accounts.Request{{Name: "agent-2", Role: accounts.RoleAgent, Tags: []string{"local"}}}})
		runThroughRestart(t, c, func() { srv.kill(t) }, func() {
			srv.restart(t)
			c.waitAPI(t)
		})
	})
}

func runThroughRestart(t *testing.T, c *coord, stop, start func()) {
	const jobs, half = 6, 300
	dir := t.TempDir()
	agents := []*proc{c.startAgent(t, "local-agent", "--concurrency", "3"), c.startAgent(t, "agent-2", "--concurrency", "3")}
	script := writeScript(t, halves)
	ids := make([]string, jobs)
	for i := range ids {
		ids[i] = c.admin.submit(t, "--tag", "local", "--env", "DIR="+dir, "--env", "N="+strconv.Itoa(half),
			"--env", fmt.Sprintf("NAME=job%d", i), "--", "sh", script)
	}
	for i := range ids {
		testenv.EventuallyWithin(t, jobTimeout, fmt.Sprintf("job %d to print its first half", i), func() bool {
			return fileExists(filepath.Join(dir, fmt.Sprintf("job%d.half", i)))
		})
	}
	follower := c.admin.startOutpost(t, "logs", "-f", ids[0])
	testenv.EventuallyWithin(t, jobTimeout, "the follower to print the first half", func() bool {
		return strings.Count(follower.stdout.String(), "\n") >= half
	})

	stop()
	// The jobs print their second half while NATS is gone.
	if err := os.WriteFile(filepath.Join(dir, "gate"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	start()

	recs := make([]jobRecord, len(ids))
	for i, id := range ids {
		rec := c.admin.waitState(t, id)
		recs[i] = rec
		if rec.State != "succeeded" || rec.Attempt != 1 || exitCode(rec.ExitCode) != "0" || (rec.Agent != "local-agent" && rec.Agent != "agent-2") {
			t.Errorf("job %d after the restart: %s, attempt %d, exit %s, agent %q; want succeeded as attempt 1", i, rec.State, rec.Attempt, exitCode(rec.ExitCode), rec.Agent)
		}
	}
	led := readLedger(t, c.url, c.creds("coordinator"))
	for i, id := range ids {
		want := numbered(fmt.Sprintf("job%d", i), 2*half)
		jc := led.checkJob(id, want, recs[i].Attempt)
		if len(jc.problems) > 0 {
			t.Errorf("job %d as stored: %s", i, strings.Join(jc.problems, "; "))
		}
		if jc.late > 0 {
			t.Logf("job %d: its request was delivered again after it ended, and stopped at once", i)
		}
		if r := c.admin.mustOutpost(t, "logs", id); r.stdout != strings.Join(want, "\n")+"\n" {
			t.Errorf("logs of job %d: %d lines, want %d", i, strings.Count(r.stdout, "\n"), len(want))
		}
	}
	if code := follower.wait(t, jobTimeout); code != 0 {
		t.Errorf("the follower exited %d:\n%s", code, follower.stderr.String())
	}
	if got, want := follower.stdout.String(), strings.Join(numbered("job0", 2*half), "\n")+"\n"; got != want {
		t.Errorf("the follower printed %d lines, want each of %d once, in order:\n%s", strings.Count(got, "\n"), 2*half, tail(got, 5))
	}
	for _, a := range agents {
		if n := strings.Count(a.stderr.String(), "attempt already started by another run"); n > 0 {
			t.Logf("an agent left %d jobs, delivered again as the same attempt after the restart, to their first run", n)
		}
		if a.exited() || !strings.Contains(a.stderr.String(), "reconnected to nats") {
			t.Errorf("agent did not ride out the restart:\n%s", tail(a.stderr.String(), 10))
		}
	}
	if r := c.admin.outpost(t, "run", "--tag", "local", "--", "echo", "after"); r.code != 0 || r.stdout != "after\n" {
		t.Errorf("a job after the restart:\n%s", r)
	}
}
