package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// ledger is what the events stream holds, job by job, read as stored: not
// through a reader that reorders and drops duplicates, so that a line
// stored twice or missing shows here.
type ledger map[string]*jobEvents

// jobEvents is one job's stored events.
type jobEvents struct {
	statuses []statusEvent
	attempts map[int]*attemptLog
}

// attemptLog is one attempt's stored lines, by line number.
type attemptLog struct {
	lines map[int]string // line number -> text, stdout and stderr alike
	dups  int            // lines stored more than once
}

// ordered returns the attempt's lines in line-number order, and how many
// numbers are missing below the highest one stored.
func (a *attemptLog) ordered() (lines []string, gaps int) {
	nums := slices.Sorted(maps.Keys(a.lines))
	for i, n := range nums {
		lines = append(lines, a.lines[n])
		if i == 0 {
			gaps += n - 1
		} else {
			gaps += n - nums[i-1] - 1
		}
	}
	return lines, gaps
}

// finalAttempt is the attempt of the job's terminal status, and the number
// of terminal statuses stored for the job's attempts (an honest run stores
// one; a stale attempt may add one that the record fences off).
func (j *jobEvents) terminal() (last statusEvent, n int) {
	for _, s := range j.statuses {
		if terminal(s.State) {
			n++
			if s.Attempt >= last.Attempt {
				last = s
			}
		}
	}
	return last, n
}

// readLedger reads the whole events stream with the coordinator's creds,
// which may read everything, as of the moment it starts.
func readLedger(t testing.TB, url, creds string) ledger {
	t.Helper()
	nc := dialNATS(t, url, creds, "_INBOX_coordinator")
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	st, err := nc.js.Stream(ctx, "OUTPOST_EVENTS")
	if err != nil {
		t.Fatalf("events stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := ledger{}
	if info.State.Msgs == 0 {
		return out
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	for {
		m, err := it.Next()
		if err != nil {
			t.Fatalf("read the events stream: %v", err)
		}
		if err := out.add(m); err != nil {
			t.Errorf("stored event %s: %v", m.Subject(), err)
		}
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if meta.Sequence.Stream >= info.State.LastSeq {
			return out
		}
	}
}

// add files one stored message, named outpost.ev.<tag>.<owner>.<job>.<kind>.
func (l ledger) add(m jetstream.Msg) error {
	parts := strings.Split(m.Subject(), ".")
	if len(parts) != 6 {
		return fmt.Errorf("unexpected subject")
	}
	job := l[parts[4]]
	if job == nil {
		job = &jobEvents{attempts: map[int]*attemptLog{}}
		l[parts[4]] = job
	}
	if parts[5] == "status" {
		var s statusEvent
		if err := json.Unmarshal(m.Data(), &s); err != nil {
			return err
		}
		job.statuses = append(job.statuses, s)
		return nil
	}
	h := m.Headers()
	attempt, err1 := strconv.Atoi(h.Get("Outpost-Attempt"))
	seq, err2 := strconv.Atoi(h.Get("Outpost-Seq"))
	if err1 != nil || err2 != nil || !bytes.HasSuffix(m.Data(), []byte("\n")) {
		return fmt.Errorf("log message without attempt, sequence or whole lines: %v", h)
	}
	a := job.attempts[attempt]
	if a == nil {
		a = &attemptLog{lines: map[int]string{}}
		job.attempts[attempt] = a
	}
	for i, text := range strings.Split(strings.TrimSuffix(string(m.Data()), "\n"), "\n") {
		if _, ok := a.lines[seq+i]; ok {
			a.dups++
		}
		a.lines[seq+i] = text
	}
	return nil
}

// checkJob checks one job against what it printed: one terminal state,
// and in its final attempt exactly the lines want, once each, in order;
// earlier attempts (cut short by a lost agent) hold no duplicate and no
// line out of order. It returns the problems found.
func (l ledger) checkJob(id string, want []string) (problems []string, lines, dups int) {
	j := l[id]
	if j == nil {
		return []string{"no events stored"}, 0, 0
	}
	last, _ := j.terminal()
	if last.State == "" {
		problems = append(problems, "no terminal status stored")
	}
	for attempt, a := range j.attempts {
		got, gaps := a.ordered()
		dups += a.dups
		if a.dups > 0 {
			problems = append(problems, fmt.Sprintf("attempt %d: %d lines stored twice", attempt, a.dups))
		}
		if attempt != last.Attempt {
			if gaps > 0 || !isPrefix(got, want) {
				problems = append(problems, fmt.Sprintf("attempt %d (cut short): %d lines, %d missing, not a prefix of the job's output", attempt, len(got), gaps))
			}
			continue
		}
		lines += len(got)
		if gaps > 0 || !slices.Equal(got, want) {
			problems = append(problems, fmt.Sprintf("final attempt %d: %d lines (%d missing), want %d in order", attempt, len(got), gaps, len(want)))
		}
	}
	if _, ok := j.attempts[last.Attempt]; !ok && len(want) > 0 && last.State != "" {
		problems = append(problems, fmt.Sprintf("final attempt %d stored no line", last.Attempt))
	}
	return problems, lines, dups
}

func isPrefix(got, want []string) bool {
	return len(got) <= len(want) && slices.Equal(got, want[:len(got)])
}

// numbered is the output of a job that prints "<name> line <i>" for i from
// 1 to n.
func numbered(name string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s line %d", name, i+1)
	}
	return out
}
