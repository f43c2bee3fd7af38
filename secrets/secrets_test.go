package secrets_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/outpost-run/outpost/secrets"
	"github.com/outpost-run/outpost/subjects"
)

func agentKey(t *testing.T, name string) (nkeys.KeyPair, subjects.AgentKey) {
	t.Helper()
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return kp, subjects.AgentKey{Name: name, XKey: pub}
}

func TestSealOpen(t *testing.T) {
	kp1, a1 := agentKey(t, "agent-1")
	kp2, a2 := agentKey(t, "agent-2")
	late, _ := agentKey(t, "agent-3")
	values := map[string]string{"TOKEN": "s3cr3t-value", "EMPTY": ""}
	s, err := secrets.Seal(values, []subjects.AgentKey{a1, a2})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range append([][]byte{s.Bundle}, s.Keys["agent-1"], s.Keys["agent-2"]) {
		if bytes.Contains(b, []byte("s3cr3t-value")) {
			t.Fatal("the plaintext is in the sealed form")
		}
	}
	for name, kp := range map[string]nkeys.KeyPair{"agent-1": kp1, "agent-2": kp2} {
		got, err := secrets.Open(s, name, kp)
		if err != nil || len(got) != 2 || got["TOKEN"] != "s3cr3t-value" {
			t.Errorf("%s opened %v, %v", name, got, err)
		}
	}
	if _, err := secrets.Open(s, "agent-3", late); !errors.Is(err, secrets.ErrNotForUs) {
		t.Errorf("an agent the secrets were not sealed to: %v", err)
	}
	// One agent's key does not open another's part.
	if _, err := secrets.Open(s, "agent-2", kp1); !errors.Is(err, secrets.ErrNotForUs) {
		t.Errorf("agent-1's key on agent-2's part: %v", err)
	}
	s.Bundle[len(s.Bundle)-1] ^= 1
	if _, err := secrets.Open(s, "agent-1", kp1); err == nil {
		t.Error("a tampered bundle opened")
	}
	if _, err := secrets.Seal(values, nil); err == nil {
		t.Error("sealed to nobody")
	}
	if _, err := secrets.Seal(map[string]string{"A-B": "x"}, []subjects.AgentKey{a1}); err == nil {
		t.Error("sealed a secret whose name is no environment variable")
	}
	if err := s.Validate(); err != nil {
		t.Errorf("sealed secrets do not validate: %v", err)
	}
}

func TestMasker(t *testing.T) {
	m := secrets.NewMasker(map[string]string{"A": "hunter2", "B": "hunter2-long", "C": "line one\nline two", "D": ""})
	for in, want := range map[string]string{
		"pw=hunter2 and hunter2": "pw=*** and ***",
		"pw=hunter2-long":        "pw=***",
		"line one":               "***",
		"say line two twice":     "say *** twice",
		"nothing secret":         "nothing secret",
		"":                       "",
		"hunter2hunter2":         "******",
	} {
		if got := string(m.Line([]byte(in))); got != want {
			t.Errorf("Line(%q) = %q, want %q", in, got, want)
		}
	}
	var none *secrets.Masker
	if got := string(none.Line([]byte("x"))); got != "x" {
		t.Errorf("a nil Masker changed %q", got)
	}
	if secrets.NewMasker(map[string]string{"E": ""}) != nil {
		t.Error("a masker of nothing")
	}
}

// TestMaskerChunks: a line that arrives in chunks comes out as the whole
// line would, wherever the chunks cut a value, for every way of cutting it
// in two or three.
func TestMaskerChunks(t *testing.T) {
	m := secrets.NewMasker(map[string]string{"A": "hunter2", "B": "hunter2-long", "C": "xyz"})
	line := "a hunter2 b hunter2-long chunter2xyzhunter2-lonhunter2-long xy"
	want := string(m.Line([]byte(line)))
	through := func(cuts ...int) string {
		var out, held []byte
		prev := 0
		for _, c := range cuts {
			var o []byte
			o, held = m.Chunk(held, []byte(line[prev:c]))
			out = append(out, o...)
			prev = c
		}
		return string(append(out, m.Line(append(held, line[prev:]...))...))
	}
	for i := 0; i <= len(line); i++ {
		if got := through(i); got != want {
			t.Fatalf("cut at %d: %q, want %q", i, got, want)
		}
		for j := i; j <= len(line); j++ {
			if got := through(i, j); got != want {
				t.Fatalf("cut at %d and %d: %q, want %q", i, j, got, want)
			}
		}
	}
	var none *secrets.Masker
	if out, held := none.Chunk([]byte("ab"), []byte("cd")); string(out) != "abcd" || held != nil {
		t.Errorf("a nil Masker: %q, holding %q", out, held)
	}
}

// FuzzMaskerChunks: however a line is cut in chunks, and whatever values
// it holds, masking it chunk by chunk gives what masking it whole gives.
func FuzzMaskerChunks(f *testing.F) {
	f.Add("a hunter2 b", "hunter2", "unt", 4, 9)
	f.Add("aaaa", "aa", "a", 1, 3)
	f.Add("xyzxyz", "zx", "yzxy", 2, 2)
	f.Fuzz(func(t *testing.T, line, v1, v2 string, c1, c2 int) {
		m := secrets.NewMasker(map[string]string{"A": v1, "B": v2})
		if m == nil || len(line) == 0 {
			return
		}
		c1 = (c1%len(line) + len(line)) % len(line)
		c2 = c1 + (c2%(len(line)-c1)+(len(line)-c1))%(len(line)-c1)
		out, held := m.Chunk(nil, []byte(line[:c1]))
		o2, held := m.Chunk(held, []byte(line[c1:c2]))
		got := string(append(append(out, o2...), m.Line(append(held, line[c2:]...))...))
		if want := string(m.Line([]byte(line))); got != want {
			t.Errorf("cut at %d and %d: %q, want %q", c1, c2, got, want)
		}
	})
}
