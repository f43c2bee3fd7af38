package secrets

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/outpost-run/outpost/subjects"
)

// ErrNotForUs is returned by Open when the secrets were not sealed to the
// agent asking: it joined after the submit, or restarted with a new key.
var ErrNotForUs = errors.New("the job's secrets were not sealed to this agent")

// Seal seals values (environment variable name to value) to each agent:
// the bundle once, to a fresh curve key, and that key's seed to every
// agent's XKey. It refuses an empty list of agents: nobody could run the
// job.
func Seal(values map[string]string, agents []subjects.AgentKey) (*subjects.SealedSecrets, error) {
	if len(agents) == 0 {
		return nil, errors.New("no agent to seal the secrets to")
	}
	for name := range values {
		if err := subjects.ValidSecretName(name); err != nil {
			return nil, err
		}
	}
	plain, err := json.Marshal(values)
	if err != nil {
		return nil, err
	}
	sender, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, err
	}
	defer sender.Wipe()
	job, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, err
	}
	defer job.Wipe()
	senderPub, _ := sender.PublicKey()
	jobPub, _ := job.PublicKey()
	jobSeed, _ := job.Seed()
	s := &subjects.SealedSecrets{Sender: senderPub, Keys: map[string][]byte{}}
	if s.Bundle, err = sender.Seal(plain, jobPub); err != nil {
		return nil, fmt.Errorf("seal the secrets: %w", err)
	}
	if len(s.Bundle) > subjects.MaxSecretsBundle {
		return nil, fmt.Errorf("the secrets take %d bytes sealed, at most %d are allowed", len(s.Bundle), subjects.MaxSecretsBundle)
	}
	for _, a := range agents {
		if s.Keys[a.Name], err = sender.Seal(jobSeed, a.XKey); err != nil {
			return nil, fmt.Errorf("seal the secrets to agent %s: %w", a.Name, err)
		}
	}
	return s, s.Validate()
}

// Open opens sealed secrets as the agent called name, whose curve key pair
// is kp.
func Open(s *subjects.SealedSecrets, name string, kp nkeys.KeyPair) (map[string]string, error) {
	sealed, ok := s.Keys[name]
	if !ok {
		return nil, ErrNotForUs
	}
	seed, err := kp.Open(sealed, s.Sender)
	if err != nil {
		return nil, fmt.Errorf("%w: its key does not open with this agent's (%v)", ErrNotForUs, err)
	}
	job, err := nkeys.FromCurveSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("the job's key: %w", err)
	}
	defer job.Wipe()
	plain, err := job.Open(s.Bundle, s.Sender)
	if err != nil {
		return nil, fmt.Errorf("open the secrets: %w", err)
	}
	var values map[string]string
	if err := json.Unmarshal(plain, &values); err != nil {
		return nil, fmt.Errorf("the secrets: %w", err)
	}
	for name, v := range values {
		if err := subjects.ValidSecretName(name); err != nil {
			return nil, err
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("secret %s contains a NUL byte", name)
		}
	}
	return values, nil
}

// Mask is what a secret's value becomes in a job's output.
const Mask = "***"

// Masker replaces secret values in lines of output.
type Masker struct {
	r     *strings.Replacer
	parts []string // what it masks, longest first
}

// NewMasker masks each value, and each line of a value that spans lines,
// since output is masked a line at a time. Longer values go first, so a
// value that holds another is masked whole. Empty values mask nothing.
func NewMasker(values map[string]string) *Masker {
	var parts []string
	for _, v := range values {
		for _, l := range strings.Split(v, "\n") {
			if l = strings.TrimSuffix(l, "\r"); l != "" && !slices.Contains(parts, l) {
				parts = append(parts, l)
			}
		}
	}
	if len(parts) == 0 {
		return nil
	}
	slices.SortFunc(parts, func(a, b string) int {
		if d := len(b) - len(a); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	pairs := make([]string, 0, 2*len(parts))
	for _, p := range parts {
		pairs = append(pairs, p, Mask)
	}
	return &Masker{r: strings.NewReplacer(pairs...), parts: parts}
}

// Chunk masks a line that arrives in chunks, one chunk at a time, so that
// a value cut in two by a chunk's end is masked whole. Given what the
// previous chunk held back and the next chunk of the line, it returns the
// masked text that may go now, and the raw tail to hold back for the next
// call: as much as could begin a value, or the start of a value the tail
// cuts through. The line's last chunk goes to Line, after what was held
// back. A nil Masker holds nothing back.
func (m *Masker) Chunk(held, chunk []byte) (out, hold []byte) {
	raw := append(held, chunk...)
	if m == nil {
		return raw, nil
	}
	cut := max(0, len(raw)-(len(m.parts[0])-1))
	// Scan as Replace does (leftmost, then longest), so the cut moves
	// back to the start of a match it would split, never into one.
	for i := 0; i < cut; {
		n := m.matchAt(raw[i:])
		switch {
		case n == 0:
			i++
			continue
		case i+n > cut:
			cut = i
		}
		i += n
	}
	return m.Line(raw[:cut]), append([]byte(nil), raw[cut:]...)
}

// matchAt is the length of the value that text begins with, or 0.
func (m *Masker) matchAt(text []byte) int {
	for _, p := range m.parts {
		if len(text) >= len(p) && string(text[:len(p)]) == p {
			return len(p)
		}
	}
	return 0
}

// Line returns line with every secret value masked. A nil Masker masks
// nothing.
func (m *Masker) Line(line []byte) []byte {
	if m == nil {
		return line
	}
	return []byte(m.r.Replace(string(line)))
}
