package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/subjects"
)

// CredRecord is what the coordinator keeps of an issued credential: its
// public parts, never its seed.
type CredRecord struct {
	accounts.Credential
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// registry keeps credential records in the creds bucket, keyed by name, so
// names stay unique across every role.
type registry struct{ kv jetstream.KeyValue }

var errNameTaken = errors.New("name already issued")

func (r registry) add(ctx context.Context, c accounts.Credential) error {
	b, err := json.Marshal(CredRecord{Credential: c})
	if err != nil {
		return err
	}
	if _, err := r.kv.Create(ctx, c.Name, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%w: %s", errNameTaken, c.Name)
		}
		return fmt.Errorf("register credential %s: %w", c.Name, err)
	}
	return nil
}

func (r registry) get(ctx context.Context, name string) (CredRecord, error) {
	e, err := r.kv.Get(ctx, name)
	if err != nil {
		return CredRecord{}, err
	}
	var c CredRecord
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return CredRecord{}, fmt.Errorf("decode credential %s: %w", name, err)
	}
	return c, nil
}

// all returns every credential record.
func (r registry) all(ctx context.Context) ([]CredRecord, error) {
	w, err := r.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	defer w.Stop()
	var out []CredRecord
	for e := range w.Updates() {
		if e == nil {
			break
		}
		var c CredRecord
		if json.Unmarshal(e.Value(), &c) == nil {
			out = append(out, c)
		}
	}
	return out, nil
}

// caller is who sent an API request, as the registry knows them.
type caller struct {
	name string
	role accounts.Role
	tags []string
}

func (c caller) hasTag(tag string) bool {
	for _, t := range c.tags {
		if t == tag {
			return true
		}
	}
	return false
}

// lookup finds the caller behind an API subject's name token. The server
// only lets a credential publish under its own name, so the token is
// trustworthy once its shape is checked.
func (r registry) lookup(ctx context.Context, name string) (caller, error) {
	c, err := r.get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return caller{}, subjects.Errorf(subjects.CodeUnknownName, "no credential named %q is registered with this coordinator", name)
	}
	if err != nil {
		return caller{}, err
	}
	if c.RevokedAt != nil {
		return caller{}, subjects.Errorf(subjects.CodeForbidden, "credential %q was revoked", name)
	}
	return caller{name: c.Name, role: c.Role, tags: c.Tags}, nil
}
