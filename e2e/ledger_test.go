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

// jobCheck is what checkJob found in one job's stored events.
type jobCheck struct {
	problems []string
	lines    int // lines of the final attempt
	dups     int // lines stored twice, in any attempt
	// late counts attempts after the final one: a finished job's request
	// delivered again (its ack lost) is stopped as soon as it reports
	// running, and its stopped status is fenced off from the record.
	late int
}

// checkJob checks one job against what it printed, given the attempt its
// record ended with: that attempt ended once and stored exactly the lines
// want, once each, in order; earlier attempts (cut short by a lost agent)
// hold no duplicate and no line out of order; later ones were stopped.
func (l ledger) checkJob(id string, want []string, final int) (c jobCheck) {
	j := l[id]
	if j == nil {
		c.problems = append(c.problems, "no events stored")
		return c
	}
	ends, late := 0, map[int]string{}
	for _, s := range j.statuses {
		switch {
		case s.Attempt == final && terminal(s.State):
			ends++
		case s.Attempt > final:
			late[s.Attempt] = s.State
		}
	}
	if ends != 1 {
		c.problems = append(c.problems, fmt.Sprintf("%d terminal statuses for its final attempt %d", ends, final))
	}
	for attempt, state := range late {
		c.late++
		if state != "stopped" {
			c.problems = append(c.problems, fmt.Sprintf("attempt %d after the final one is %s, not stopped", attempt, state))
		}
	}
	for attempt, a := range j.attempts {
		got, gaps := a.ordered()
		c.dups += a.dups
		if a.dups > 0 {
			c.problems = append(c.problems, fmt.Sprintf("attempt %d: %d lines stored twice", attempt, a.dups))
		}
		if attempt != final {
			if gaps > 0 || !isPrefix(got, want) {
				c.problems = append(c.problems, fmt.Sprintf("attempt %d (cut short): %d lines, %d missing, not a prefix of the job's output", attempt, len(got), gaps))
			}
			continue
		}
		c.lines = len(got)
		if gaps > 0 || !slices.Equal(got, want) {
			c.problems = append(c.problems, fmt.Sprintf("final attempt %d: %d lines (%d missing), want %d in order", attempt, len(got), gaps, len(want)))
		}
	}
	if _, ok := j.attempts[final]; !ok && len(want) > 0 {
		c.problems = append(c.problems, fmt.Sprintf("final attempt %d stored no line", final))
	}
	return c
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
