package agent_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

// cutSite is a site whose agent reaches NATS through a proxy the test can
// cut, and a job that prints numbered lines in three phases: before the
// cut, while the link is down, and after it is back. Each phase ends with
// a file in dir and the next waits for a gate file the test writes.
type cutSite struct {
	*site
	proxy *testenv.Proxy
	conn  *client.Conn
	dir   string
}

// The phases' last line numbers, and the padding of a line. The middle
// phase prints about 10 MB: more than a pipe, the agent's line channel and
// the NATS client's own reconnect buffer (8 MB) hold, so only a job that
// keeps running while its agent is cut off gets through it.
const (
	phase1  = 500
	phase2  = 10500
	phase3  = 11000
	padding = 1000
)

func newCutSite(t *testing.T, cfg agent.Config) *cutSite {
	t.Helper()
	s := &cutSite{site: newSite(t, coordinator.Limits{}), dir: t.TempDir()}
	s.proxy = testenv.NewProxy(t, s.env.URL)
	conn, err := client.Dial(testenv.Context(t), client.DialOptions{URL: s.proxy.URL(), Creds: s.agentCreds, Reconnect: true,
		Logger: s.env.Logs.Logger(), Options: []nats.Option{nats.ReconnectWait(20 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	s.conn, cfg.Conn = conn, conn
	s.env.StartAgent(s.agentCreds, cfg)
	return s
}

// line is the text of output line n: fixed width, so byte counts are known.
func lineText(n int) string { return fmt.Sprintf("line %06d %s", n, strings.Repeat("x", padding)) }

func (s *cutSite) submitPhased(t *testing.T) string {
	t.Helper()
	print := func(from, to int) string {
		return fmt.Sprintf(`seq %d %d | awk '{printf "line %%06d %s\n", $1}'`, from, to, strings.Repeat("x", padding))
	}
	wait := func(gate string) string {
		return fmt.Sprintf(`while [ ! -e %s ]; do sleep 0.01; done`, filepath.Join(s.dir, gate))
	}
	script := strings.Join([]string{
		print(1, phase1), "touch " + filepath.Join(s.dir, "1"), wait("cut"),
		print(phase1+1, phase2), "touch " + filepath.Join(s.dir, "2"), wait("back"),
		print(phase2+1, phase3),
	}, "\n")
	return s.submit(t, subjects.JobSpec{Tag: "a", Command: sh(script)}).ID
}

func (s *cutSite) gate(t *testing.T, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, name), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *cutSite) waitFile(t *testing.T, name, what string) {
	t.Helper()
	testenv.Eventually(t, what, func() bool { return fileExists(filepath.Join(s.dir, name)) })
}

// runThroughCut runs the phased job and cuts the agent's link for the
// middle phase, which must end while the link is still down. The last
// phase starts once the agent has reconnected, while it still sends what
// it held: the job is faster than NATS then, and must be held back, not
// lose lines.
func (s *cutSite) runThroughCut(t *testing.T) string {
	t.Helper()
	id := s.submitPhased(t)
	s.waitFile(t, "1", "the first phase to be printed")
	s.proxy.Cut()
	testenv.Eventually(t, "the agent to see its link drop", func() bool { return !s.conn.IsConnected() })
	s.gate(t, "cut")
	s.waitFile(t, "2", "the job to print its middle phase while its agent is cut off")
	if s.conn.IsConnected() {
		t.Fatal("the agent reconnected through a cut proxy")
	}
	s.proxy.Restore()
	testenv.Eventually(t, "the agent to reconnect", s.conn.IsConnected)
	s.gate(t, "back")
	s.waitState(t, id, subjects.StateSucceeded)
	return id
}

// storedLines reads a job's log messages as stored, not through a reader
// that would hide duplicates, and checks that their line numbers run from 1
// without gap or overlap. It returns the lines in number order. A message
// republished after the link came back may be stored after later ones;
// readers put it back by its number.
func storedLines(t *testing.T, env *testenv.Env, id string) []agent.Line {
	t.Helper()
	msgs := stored(t, env, subjects.EventSubject("a", "alice", id, subjects.KindLog))
	seq := func(m jetstream.Msg) int { n, _ := strconv.Atoi(m.Headers().Get(subjects.HeaderSeq)); return n }
	slices.SortStableFunc(msgs, func(a, b jetstream.Msg) int { return seq(a) - seq(b) })
	next := 1
	var out []agent.Line
	for i, m := range msgs {
		h := m.Headers()
		if seq, err := strconv.Atoi(h.Get(subjects.HeaderSeq)); err != nil || seq != next {
			t.Fatalf("message %d of %d starts at line %q, want %d: a line was lost or stored twice", i, len(msgs), h.Get(subjects.HeaderSeq), next)
		}
		data := m.Data()
		for _, text := range strings.Split(string(data[:len(data)-1]), "\n") {
			out = append(out, agent.NewLine(h.Get(subjects.HeaderStream), text, false))
		}
		next += bytes.Count(data, []byte{'\n'})
	}
	return out
}

// TestLinkDownMidJobLosesNothing: while the agent's link to NATS is down
// the job runs on and its lines wait in the agent; once the link is back
// every line is stored exactly once, in order, and the job ends normally.
func TestLinkDownMidJobLosesNothing(t *testing.T) {
	t.Parallel()
	s := newCutSite(t, agent.Config{})
	mark := s.env.Logs.Len()
	id := s.runThroughCut(t)
	lines := storedLines(t, s.env, id)
	if len(lines) != phase3 {
		t.Fatalf("stored %d lines, the job printed %d", len(lines), phase3)
	}
	for i, l := range lines {
		if l.Stream() != subjects.StreamStdout || l.Text() != lineText(i+1) {
			t.Fatalf("line %d is %s %q, want stdout %q", i+1, l.Stream(), l.Text(), lineText(i+1))
		}
	}
	if _, ok := s.env.Logs.Find(mark, func(e testenv.Entry) bool { return e.Msg == "reconnected to nats" }); !ok {
		t.Error("the agent never logged its reconnection")
	}
	rec := s.waitState(t, id, subjects.StateSucceeded)
	if rec.Attempt != 1 {
		t.Errorf("the job ran %d times; a cut shorter than the ack wait must not hand it over", rec.Attempt)
	}
}

var lossMarker = regexp.MustCompile(`^\[outpost: (\d+) lines \((\d+) bytes\) of output were lost: NATS was out of reach and the agent's buffer of (\d+) bytes was full\]$`)

// TestFullBufferDropsLinesWithAMarker: with a small output buffer, a job
// that prints more than it holds while the link is down loses lines, but
// never silently: a marker line stands where they were and says how many
// lines and bytes are gone, and every other line is stored once, in order.
func TestFullBufferDropsLinesWithAMarker(t *testing.T) {
	t.Parallel()
	s := newCutSite(t, agent.Config{MaxBuffered: agent.MinBuffered})
	id := s.runThroughCut(t)
	lines := storedLines(t, s.env, id)
	prev, markers, lost := 0, 0, 0
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if m := lossMarker.FindStringSubmatch(l.Text()); m != nil {
			if l.Stream() != subjects.StreamStderr || i+1 == len(lines) {
				t.Fatalf("marker %q on %s at line %d of %d", l.Text(), l.Stream(), i+1, len(lines))
			}
			n, _ := strconv.Atoi(m[1])
			size, _ := strconv.Atoi(m[2])
			next, err := strconv.Atoi(strings.Fields(lines[i+1].Text())[1])
			if err != nil || next-prev-1 != n || size != n*(len(lineText(1))+1) || m[3] != strconv.Itoa(agent.MinBuffered) {
				t.Errorf("marker %q between lines %d and %q", l.Text(), prev, lines[i+1].Text())
			}
			markers++
			lost += n
			continue
		}
		n, err := strconv.Atoi(strings.Fields(l.Text())[1])
		if err != nil || n <= prev || l.Text() != lineText(n) {
			t.Fatalf("line %q follows line %d", l.Text(), prev)
		}
		if n != prev+1 && (i == 0 || lossMarker.FindString(lines[i-1].Text()) == "") {
			t.Fatalf("lines %d to %d are missing without a marker", prev+1, n-1)
		}
		prev = n
	}
	if prev != phase3 || lost == 0 || len(lines)-markers+lost != phase3 {
		t.Errorf("kept %d lines and %d markers for %d lost, last line %d; the job printed %d", len(lines)-markers, markers, lost, prev, phase3)
	}
	t.Logf("%d lines kept, %d lost under %d markers", len(lines)-markers, lost, markers)
}

// TestTerminalStatusStoredAfterReconnect: a job that ends while its agent
// is cut off is not run again: its terminal status waits in the agent and
// is stored once the link is back.
func TestTerminalStatusStoredAfterReconnect(t *testing.T) {
	t.Parallel()
	s := newCutSite(t, agent.Config{})
	ended := filepath.Join(s.dir, "ended")
	id := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh(`echo before; while [ ! -e ` + filepath.Join(s.dir, "cut") + ` ]; do sleep 0.01; done; echo after; touch ` + ended)}).ID
	s.waitState(t, id, subjects.StateRunning)
	s.proxy.Cut()
	testenv.Eventually(t, "the agent to see its link drop", func() bool { return !s.conn.IsConnected() })
	s.gate(t, "cut")
	s.waitFile(t, "ended", "the job to end while its agent is cut off")
	if r, err := s.alice.Get(testenv.Context(t), id); err != nil || r.State != subjects.StateRunning {
		t.Fatalf("while the agent is cut off the job is %v, %v", r, err)
	}
	s.proxy.Restore()
	rec := s.waitState(t, id, subjects.StateSucceeded)
	if rec.Attempt != 1 {
		t.Errorf("attempt %d: the job ran again", rec.Attempt)
	}
	if stdout, _, _ := s.output(t, id); stdout != "before\nafter\n" {
		t.Errorf("stdout %q", stdout)
	}
}
