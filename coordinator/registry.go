package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/subjects"
)

// registry keeps credential records in the creds bucket, keyed by name, so
// names stay unique across every role. It holds public keys and JWTs only.
type registry struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
}

var errNameTaken = errors.New("name already issued")

// add records a new credential. A name may be taken again only once its
// previous credential is revoked; the revoked key is kept with the record.
func (r registry) add(ctx context.Context, c subjects.Credential) error {
	old, rev, err := getJSON[subjects.Credential](ctx, r.kv, c.Name)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev = 0
	case err != nil:
		return err
	case old.RevokedAt == nil:
		return fmt.Errorf("%w: %s (pick another name, or revoke it first)", errNameTaken, c.Name)
	default:
		c.Revoked = append(slices.Clone(old.Revoked), old.PublicKey)
	}
	if slices.Contains(c.Revoked, c.PublicKey) {
		return fmt.Errorf("public key %s of %s was revoked and is never issued again", c.PublicKey, c.Name)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = r.kv.Create(ctx, c.Name, b)
	} else {
		_, err = r.kv.Update(ctx, c.Name, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%w: %s", errNameTaken, c.Name)
	}
	if err != nil {
		return fmt.Errorf("register credential %s: %w", c.Name, err)
	}
	return nil
}

func (r registry) get(ctx context.Context, name string) (subjects.Credential, error) {
	c, _, err := getJSON[subjects.Credential](ctx, r.kv, name)
	return c, err
}

// update changes a credential record with compare-and-set.
func (r registry) update(ctx context.Context, name string, change func(*subjects.Credential) error) (subjects.Credential, error) {
	c, _, err := updateJSON(ctx, r.kv, name, func(c *subjects.Credential) (bool, error) { return true, change(c) })
	return c, err
}

// all returns every credential record.
func (r registry) all(ctx context.Context) ([]subjects.Credential, error) {
	var out []subjects.Credential
	err := scanKV(ctx, r.js, r.kv, func(_ string, value []byte) {
		var c subjects.Credential
		if json.Unmarshal(value, &c) == nil {
			out = append(out, c)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	return out, nil
}

// caller is who sent an API request, as the registry knows them.
type caller struct {
	name string
	role accounts.Role
	tags []string
}

func (c caller) hasTag(tag string) bool { return slices.Contains(c.tags, tag) }

// lookup finds the caller behind an API subject's name token, and checks
// it against id, the identity the server stamped on the request: the name
// must belong to that very user key in that very account.
func (r registry) lookup(ctx context.Context, name string, id requester) (caller, error) {
	c, err := r.get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return caller{}, subjects.Errorf(subjects.CodeUnknownName, "no credential named %q is registered with this coordinator", name)
	}
	if err != nil {
		return caller{}, err
	}
	if c.PublicKey != id.User || c.Account != id.Account {
		return caller{}, subjects.Errorf(subjects.CodeForbidden, "the request for %q came from another credential", name)
	}
	if c.RevokedAt != nil {
		return caller{}, subjects.Errorf(subjects.CodeForbidden, "credential %q was revoked", name)
	}
	return caller{name: c.Name, role: accounts.Role(c.Role), tags: c.Tags}, nil
}
