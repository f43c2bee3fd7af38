package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestSubmitToFirstLineLatency measures, and only logs, how long
// 'outpost run --tag local -- echo hi' takes as a whole process, and how long
// a plain client waits from the submit reply to the job's first log line.
// Nothing is asserted about the figures: they depend on the machine. See
// them with 'go test -run Latency -v ./e2e/'.
func TestSubmitToFirstLineLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("measures latency; skipped with -short")
	}
	// Not parallel: Go runs sequential tests before the parallel ones
	// resume, so the figures are taken on a machine the rest of the suite
	// leaves alone.
	c := startCoordinator(t, coordOptions{})
	const runs = 20

	var cli []time.Duration
	for range runs {
		start := time.Now()
		r := c.admin.outpost(t, "run", "--tag", "local", "--", "echo", "hi")
		cli = append(cli, time.Since(start))
		if r.code != 0 || r.stdout != "hi\n" {
			t.Fatalf("run echo hi:\n%s", r)
		}
	}

	nc := dialNATS(t, c.url, c.creds("admin"), "_INBOX_admin")
	lines := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe("outpost.live.local.admin.*.log", lines)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var submit, firstLine []time.Duration
	for range runs {
		start := time.Now()
		reply := nc.request(t, "outpost.api.admin.submit", []byte(`{"tag":"local","command":["echo","hi"]}`))
		replied := time.Now()
		if reply.Job == nil {
			t.Fatalf("submit: %+v", reply.Error)
		}
		awaitMsg(t, lines, "outpost.live.local.admin."+reply.Job.ID+".log")
		submit = append(submit, replied.Sub(start))
		firstLine = append(firstLine, time.Since(replied))
	}

	t.Logf("outpost run --tag local -- echo hi, the whole CLI process: %s", summary(cli))
	t.Logf("plain client, submit request to reply:                     %s", summary(submit))
	t.Logf("plain client, submit reply to the first log line:          %s", summary(firstLine))
}

// awaitMsg waits for a message on subject, skipping others (earlier jobs'
// late lines).
func awaitMsg(t testing.TB, ch <-chan *nats.Msg, subject string) {
	t.Helper()
	timeout := time.After(jobTimeout)
	for {
		select {
		case m := <-ch:
			if m.Subject == subject {
				return
			}
		case <-timeout:
			t.Fatalf("no message on %s within %s", subject, jobTimeout)
		}
	}
}

// summary is the median and the maximum of some durations.
func summary(d []time.Duration) string {
	d = slices.Clone(d)
	slices.Sort(d)
	return fmt.Sprintf("p50 %v, max %v over %d runs", d[len(d)/2].Round(10*time.Microsecond), d[len(d)-1].Round(10*time.Microsecond), len(d))
}

// BenchmarkRunEchoHi times 'outpost run --tag local -- echo hi' end to end:
// a process start, connect, submit, the job's run, and the replay of its
// output until the job ends.
func BenchmarkRunEchoHi(b *testing.B) {
	c := startCoordinator(b, coordOptions{})
	for b.Loop() {
		if r := c.admin.outpost(b, "run", "--tag", "local", "--", "echo", "hi"); r.code != 0 || r.stdout != "hi\n" {
			b.Fatalf("run echo hi:\n%s", r)
		}
	}
}
