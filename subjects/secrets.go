package subjects

import (
	"fmt"

	"github.com/nats-io/nkeys"
)

// Bounds on a job's sealed secrets.
const (
	// MaxSecretsBundle is the largest sealed bundle, in bytes.
	MaxSecretsBundle = 64 << 10
	// MaxSecretRecipients is the most agents a bundle may be sealed to.
	MaxSecretRecipients = 1000
	// maxSealedKey bounds one agent's sealed key: a curve seed sealed.
	maxSealedKey = 256
)

// SealedSecrets are a job's secrets as they travel and are stored: only
// the agents named in Keys can read them. The bundle (the secrets' names
// and values, as JSON) is sealed once, from the key Sender to a fresh
// curve key made for this job; that key's seed is sealed from Sender to
// each agent's curve key (its XKey, from its heartbeat). Sender's private
// half is thrown away once the spec is sealed.
type SealedSecrets struct {
	// Sender is the public curve key both seals come from.
	Sender string `json:"sender"`
	// Bundle is the sealed bundle.
	Bundle []byte `json:"bundle"`
	// Keys holds, by agent name, the job key's seed sealed to that agent.
	Keys map[string][]byte `json:"keys"`
}

// Validate checks the shape of sealed secrets; only an agent can check
// what is inside.
func (s *SealedSecrets) Validate() error {
	if !nkeys.IsValidPublicCurveKey(s.Sender) {
		return fmt.Errorf("%w: secrets.sender %q is not a public curve key", ErrBadSpec, s.Sender)
	}
	if len(s.Bundle) == 0 || len(s.Bundle) > MaxSecretsBundle {
		return fmt.Errorf("%w: secrets.bundle is %d bytes; want 1 to %d", ErrBadSpec, len(s.Bundle), MaxSecretsBundle)
	}
	if len(s.Keys) == 0 || len(s.Keys) > MaxSecretRecipients {
		return fmt.Errorf("%w: secrets.keys names %d agents; want 1 to %d", ErrBadSpec, len(s.Keys), MaxSecretRecipients)
	}
	for name, k := range s.Keys {
		if err := ValidName(name); err != nil {
			return fmt.Errorf("%w: secrets.keys: %w", ErrBadSpec, err)
		}
		if len(k) == 0 || len(k) > maxSealedKey {
			return fmt.Errorf("%w: secrets.keys[%s] is %d bytes; want 1 to %d", ErrBadSpec, name, len(k), maxSealedKey)
		}
	}
	return nil
}

// ValidSecretName reports whether name may name a secret: it becomes an
// environment variable of the job.
func ValidSecretName(name string) error {
	if !envKeyRE.MatchString(name) {
		return fmt.Errorf("secret name %q must match [A-Za-z_][A-Za-z0-9_]*", name)
	}
	return nil
}

// AgentsRequest asks for the online agents of a tag the caller may submit
// to, with their public curve keys, so that secrets can be sealed to them.
type AgentsRequest struct {
	Tag string `json:"tag"`
}

// AgentKey is an online agent and its public curve key (XKey).
type AgentKey struct {
	Name string `json:"name"`
	XKey string `json:"xkey"`
}
