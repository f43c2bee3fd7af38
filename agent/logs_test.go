package agent_test

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

const job = "01jd7x3k9q8r6t5v4w3y2z1a0b"

// output is a job's output as the readers hand it over: runs of lines of
// either stream, some empty, some long lines cut into partial chunks.
func output(n int) []agent.Line {
	rng := rand.New(rand.NewPCG(1, 2))
	var out []agent.Line
	stream := subjects.StreamStdout
	for i := 0; len(out) < n; i++ {
		if rng.IntN(4) == 0 {
			if stream == subjects.StreamStdout {
				stream = subjects.StreamStderr
			} else {
				stream = subjects.StreamStdout
			}
		}
		switch rng.IntN(50) {
		case 0: // a long line: two full chunks and a tail
			out = append(out,
				agent.NewLine(stream, strings.Repeat("L", subjects.MaxLine), true),
				agent.NewLine(stream, strings.Repeat("M", subjects.MaxLine), true),
				agent.NewLine(stream, "end of line "+strconv.Itoa(i), false))
		case 1:
			out = append(out, agent.NewLine(stream, "", false))
		default:
			out = append(out, agent.NewLine(stream, stream+" line "+strconv.Itoa(i)+strings.Repeat(".", rng.IntN(2000)), false))
		}
	}
	return out
}

// TestLogBatches sends output through the batcher and publisher to a real
// server, as an agent of the tag, and reads back what was stored: messages
// whose line numbers form one contiguous run, each of one stream, within
// the size cap, with the de-duplication ID job.attempt.seq, and nothing
// lost.
func TestLogBatches(t *testing.T) {
	env := testenv.New(t)
	env.StartCoordinator(coordinator.Limits{})
	conn := env.Dial(env.Creds(accounts.RoleAgent, "agent-a", "a"))
	subject := subjects.EventSubject("a", "alice", job, subjects.KindLog)
	lines := output(3000)
	in := make(chan agent.Line)
	go func() {
		for _, l := range lines {
			in <- l
		}
		close(in)
	}()
	agent.PublishLog(testenv.Context(t), conn.JS, subject, job, 2, in)

	msgs := stored(t, env, subject)
	next := 1
	var got []agent.Line
	for i, m := range msgs {
		h := m.Headers()
		seq, err := strconv.Atoi(h.Get(subjects.HeaderSeq))
		if err != nil || seq != next {
			t.Fatalf("message %d starts at line %q, want %d", i, h.Get(subjects.HeaderSeq), next)
		}
		if id := h.Get(subjects.HeaderMsgID); id != subjects.MsgID(job, 2, strconv.Itoa(seq)) {
			t.Errorf("message %d has ID %q", i, id)
		}
		if a := h.Get(subjects.HeaderAttempt); a != "2" {
			t.Errorf("message %d of attempt %q", i, a)
		}
		data := m.Data()
		if len(data) == 0 || len(data) > subjects.MaxLogMsg || data[len(data)-1] != '\n' {
			t.Fatalf("message %d holds %d bytes, not whole lines within %d", i, len(data), subjects.MaxLogMsg)
		}
		partial := h.Get(subjects.HeaderPartial) == "1"
		texts := strings.Split(string(data[:len(data)-1]), "\n")
		for j, text := range texts {
			got = append(got, agent.NewLine(h.Get(subjects.HeaderStream), text, partial && j == len(texts)-1))
		}
		next += bytes.Count(data, []byte{'\n'})
	}
	if next-1 != len(lines) {
		t.Fatalf("stored %d lines, sent %d", next-1, len(lines))
	}
	// Line by line, what was stored is what was sent: same text, same
	// stream, and a partial chunk always ends its message.
	for i := range lines {
		if !equalLine(got[i], lines[i]) {
			t.Fatalf("line %d differs", i+1)
		}
	}
	if len(msgs) >= len(lines) {
		t.Errorf("%d messages for %d lines: nothing was batched", len(msgs), len(lines))
	}

	// A republish of a stored message (a retry after a lost ack) is
	// dropped by its ID.
	again := nats.NewMsg(subject)
	again.Header, again.Data = msgs[0].Headers(), msgs[0].Data()
	ack, err := conn.JS.PublishMsg(testenv.Context(t), again)
	if err != nil || !ack.Duplicate {
		t.Errorf("republish: %+v, %v", ack, err)
	}
}

func equalLine(a, b agent.Line) bool {
	return a.Stream() == b.Stream() && a.Text() == b.Text() && a.Partial() == b.Partial()
}

func stored(t *testing.T, env *testenv.Env, subject string) []jetstream.Msg {
	t.Helper()
	ctx := testenv.Context(t)
	s, err := env.CoordConn.JS.Stream(ctx, subjects.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	n := int(info.State.Subjects[subject])
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < n {
		b, err := c.Fetch(n - len(out))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			out = append(out, m)
		}
		if err := b.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestQuietLineGoesAtOnce: a line after a quiet spell is sent at once, not
// after the linger, so a follower sees a job's first line as soon as it is
// printed even though the job goes on; lines that are waiting together
// still share one message. The linger here is an hour, so only the quiet
// rule can send anything before the output ends.
func TestQuietLineGoesAtOnce(t *testing.T) {
	env := testenv.New(t)
	env.StartCoordinator(coordinator.Limits{})
	conn := env.Dial(env.Creds(accounts.RoleAgent, "agent-a", "a"))
	subject := subjects.EventSubject("a", "alice", job, subjects.KindLog)
	in := make(chan agent.Line, 100)
	done := make(chan struct{})
	go func() {
		agent.PublishLogLinger(testenv.Context(t), conn.JS, subject, job, 1, time.Hour, in)
		close(done)
	}()
	in <- agent.NewLine(subjects.StreamStdout, "first", false)
	testenv.Eventually(t, "the first line to be stored while the output goes on", func() bool {
		return len(stored(t, env, subject)) == 1
	})
	// A burst already waiting, after a line just sent, lingers as one.
	for i := range 50 {
		in <- agent.NewLine(subjects.StreamStdout, "burst "+strconv.Itoa(i), false)
	}
	close(in)
	<-done
	msgs := stored(t, env, subject)
	if len(msgs) != 2 || string(msgs[0].Data()) != "first\n" || bytes.Count(msgs[1].Data(), []byte{'\n'}) != 50 {
		t.Errorf("stored %d messages, want the first line alone and the burst in one", len(msgs))
	}
}
