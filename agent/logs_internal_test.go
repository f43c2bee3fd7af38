package agent

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/outpost-run/outpost/subjects"
)

func collect(r io.Reader) []line {
	out := make(chan line, 64)
	done := make(chan struct{})
	br := newLineReader()
	br.Reset(r)
	go func() { readLines(br, subjects.StreamStdout, out); close(done) }()
	var got []line
	for {
		select {
		case l := <-out:
			got = append(got, l)
		case <-done:
			for {
				select {
				case l := <-out:
					got = append(got, l)
				default:
					return got
				}
			}
		}
	}
}

// reassemble joins chunks back into lines, each ending in '\n'.
func reassemble(ls []line) string {
	var b strings.Builder
	for _, l := range ls {
		b.Write(l.text)
		if !l.partial {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func TestReadLines(t *testing.T) {
	long := strings.Repeat("x", 2*subjects.MaxLine+100)
	for _, tc := range []struct {
		name   string
		in     string
		chunks []int // length of each line or chunk sent
		parts  []bool
	}{
		{"lines", "a\nbb\n\nccc\n", []int{1, 2, 0, 3}, []bool{false, false, false, false}},
		{"no final newline", "a\ntail", []int{1, 4}, []bool{false, false}},
		{"empty", "", nil, nil},
		{"only a newline", "\n", []int{0}, []bool{false}},
		{"longest whole line", strings.Repeat("y", subjects.MaxLine-1) + "\n", []int{subjects.MaxLine - 1}, []bool{false}},
		{"one byte too long", strings.Repeat("y", subjects.MaxLine) + "\nz\n", []int{subjects.MaxLine, 0, 1}, []bool{true, false, false}},
		{"long line", "a\n" + long + "\nb\n", []int{1, subjects.MaxLine, subjects.MaxLine, 100, 1}, []bool{false, true, true, false, false}},
		{"long final line", long, []int{subjects.MaxLine, subjects.MaxLine, 100}, []bool{true, true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []struct {
				name string
				r    io.Reader
			}{
				{"whole", strings.NewReader(tc.in)},
				{"byte by byte", iotest.OneByteReader(strings.NewReader(tc.in))},
				{"half", iotest.HalfReader(strings.NewReader(tc.in))},
			} {
				got := collect(r.r)
				var lens []int
				var parts []bool
				for _, l := range got {
					lens = append(lens, len(l.text))
					parts = append(parts, l.partial)
					if l.stream != subjects.StreamStdout {
						t.Errorf("%s: stream %q", r.name, l.stream)
					}
					if len(l.text) > subjects.MaxLine {
						t.Errorf("%s: a chunk of %d bytes", r.name, len(l.text))
					}
				}
				if !slices.Equal(lens, tc.chunks) || !slices.Equal(parts, tc.parts) {
					t.Errorf("%s: chunks %v partial %v, want %v %v", r.name, lens, parts, tc.chunks, tc.parts)
				}
				want := tc.in
				if want != "" && !strings.HasSuffix(want, "\n") {
					want += "\n"
				}
				if got := reassemble(got); got != want {
					t.Errorf("%s: reassembled %d bytes, want %d: something was dropped", r.name, len(got), len(want))
				}
			}
		})
	}
}

func TestReadLinesStopsOnError(t *testing.T) {
	r := io.MultiReader(strings.NewReader("x\nunfinished"), iotest.ErrReader(errors.New("pipe closed")))
	got := collect(r)
	if reassemble(got) != "x\nunfinished\n" || got[len(got)-1].partial {
		t.Errorf("got %q", reassemble(got))
	}
}
