package client

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// msg is a log message of attempt a whose first line is seq, holding n
// lines.
func msg(a, seq, n int) *LogLines {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "a%d l%d\n", a, seq+i)
	}
	return &LogLines{Stream: "stdout", Attempt: a, Seq: seq, Data: []byte(b.String())}
}

func run(t *testing.T, in []*LogLines) []string {
	t.Helper()
	var out []string
	r := reorder{next: map[int]int{}, held: map[int][]*LogLines{}, fn: func(e Event) error {
		out = append(out, fmt.Sprintf("%d:%d", e.Log.Attempt, e.Log.Seq))
		return nil
	}}
	for _, l := range in {
		if err := r.add(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.flush(); err != nil {
		t.Fatal(err)
	}
	if len(r.held) != 0 {
		t.Errorf("held after flush: %v", r.held)
	}
	return out
}

func TestReorder(t *testing.T) {
	// Attempt 1: lines 1-2, 3, 4-6, 7.
	m1, m3, m4, m7 := msg(1, 1, 2), msg(1, 3, 1), msg(1, 4, 3), msg(1, 7, 1)
	for _, tc := range []struct {
		name string
		in   []*LogLines
		want string
	}{
		{"in order", []*LogLines{m1, m3, m4, m7}, "1:1 1:3 1:4 1:7"},
		{"one late", []*LogLines{m1, m4, m7, m3}, "1:1 1:3 1:4 1:7"},
		{"reversed", []*LogLines{m7, m4, m3, m1}, "1:1 1:3 1:4 1:7"},
		{"duplicate in order", []*LogLines{m1, m1, m3, m3, m4, m7, m4}, "1:1 1:3 1:4 1:7"},
		{"duplicate while held", []*LogLines{m1, m4, m4, m7, m3}, "1:1 1:3 1:4 1:7"},
		{"gap flushed at the end", []*LogLines{m1, m4, m7}, "1:1 1:4 1:7"},
		{"duplicate in a gap", []*LogLines{m1, m7, m4, m7, m4}, "1:1 1:4 1:7"},
		{"first message lost", []*LogLines{m4, m3}, "1:3 1:4"},
		{"attempts apart", []*LogLines{m1, msg(2, 2, 1), m3, msg(2, 1, 1)}, "1:1 1:3 2:1 2:2"},
		{"gaps in two attempts", []*LogLines{m1, m4, msg(2, 3, 1), msg(2, 5, 1)}, "1:1 1:4 2:3 2:5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(run(t, tc.in), " "); got != tc.want {
				t.Errorf("handed over %s, want %s", got, tc.want)
			}
		})
	}
}

func TestReorderStopsOnError(t *testing.T) {
	boom := errors.New("reader went away")
	calls := 0
	r := reorder{next: map[int]int{}, held: map[int][]*LogLines{}, fn: func(Event) error { calls++; return boom }}
	if err := r.add(msg(1, 2, 1)); err != nil {
		t.Fatal(err) // held, not handed over
	}
	if err := r.add(msg(1, 1, 1)); !errors.Is(err, boom) {
		t.Errorf("add = %v", err)
	}
	if calls != 1 {
		t.Errorf("fn called %d times after it failed", calls)
	}
}

func TestLogLinesLines(t *testing.T) {
	for data, n := range map[string]int{"a\n": 1, "a\nb\n": 2, "\n\n\n": 3, "chunk\n": 1} {
		if got := (&LogLines{Data: []byte(data)}).Lines(); got != n {
			t.Errorf("%q: %d lines, want %d", data, got, n)
		}
	}
}
