package subjects

import "time"

// Admin verbs: credentials are issued and revoked through the API, by
// admins only.
const (
	VerbIssue  = "issue"
	VerbRevoke = "revoke"
	VerbCreds  = "creds"
)

// AuditStream records every API call and credential change.
const (
	AuditStream = "OUTPOST_AUDIT"
	AuditPrefix = Root + ".audit"
)

// AuditSubject is where a call of verb by name is recorded.
func AuditSubject(name, verb string) string { return AuditPrefix + "." + name + "." + verb }

// Credential is what the coordinator keeps, and shows, of an issued
// credential: its public parts, never its seed.
type Credential struct {
	Name      string   `json:"name"`
	Role      string   `json:"role"`
	Tags      []string `json:"tags,omitempty"`
	PublicKey string   `json:"public_key"`
	// Account is the public key of the credential's own account, which
	// imports from OUTPOST only what its role needs.
	Account   string     `json:"account,omitempty"`
	JWT       string     `json:"jwt,omitempty"`
	IssuedAt  time.Time  `json:"issued_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	LastSeen  *time.Time `json:"last_seen,omitempty"`
	// Revoked lists the public keys that earlier credentials of this name
	// held; none of them is ever issued again.
	Revoked []string `json:"revoked_keys,omitempty"`
}

// Active reports whether the credential may still connect.
func (c *Credential) Active(now time.Time) bool {
	return c.RevokedAt == nil && (c.ExpiresAt == nil || now.Before(*c.ExpiresAt))
}

type (
	// IssueRequest asks for a new credential with a fresh key pair.
	IssueRequest struct {
		Name    string   `json:"name"`
		Role    string   `json:"role"`
		Tags    []string `json:"tags,omitempty"`
		Expires Duration `json:"expires,omitempty"`
		// Leaf makes an agent credential for a leaf node's link to the hub
		// (deploy/nats/leaf.conf) rather than for an agent's connection.
		Leaf bool `json:"leaf,omitempty"`
	}
	// RevokeRequest asks for a credential to be revoked at once.
	RevokeRequest struct {
		Name string `json:"name"`
	}
	// CredsRequest asks for the list of credentials.
	CredsRequest struct {
		Role string `json:"role,omitempty"`
	}
)

// AuditEntry is one record of the audit stream.
type AuditEntry struct {
	At     time.Time `json:"at"`
	Caller string    `json:"caller"`
	Role   string    `json:"role,omitempty"`
	Verb   string    `json:"verb"`
	// Target is what the call was about: a job ID or a credential name.
	Target string `json:"target,omitempty"`
	Tag    string `json:"tag,omitempty"`
	// Result is "ok" or the error code.
	Result  string `json:"result"`
	Message string `json:"message,omitempty"`
}
