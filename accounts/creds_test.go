package accounts_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/subjects"
)

// tamper edits the claims of the JWT in a creds file without signing them
// again, as someone would who wants another tag.
func tamper(t testing.TB, creds []byte, old, new string) []byte {
	t.Helper()
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("a JWT of %d parts", len(parts))
	}
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(claims), old) {
		t.Fatalf("the claims do not hold %q: %s", old, claims)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(claims), old, new, 1)))
	return []byte(strings.Replace(string(creds), tok, strings.Join(parts, "."), 1))
}

// FuzzParseCreds feeds arbitrary bytes to ParseCreds. It must never panic,
// and what it accepts must be a user JWT whose seed matches it and whose
// name is a valid token.
func FuzzParseCreds(f *testing.F) {
	a, _, err := accounts.Init(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	c, err := a.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a", "b"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c.Creds)
	f.Add(c.Creds[:len(c.Creds)/2])
	f.Add([]byte(c.JWT))
	f.Add(tamper(f, c.Creds, "pool:a", "pool:z"))
	f.Add([]byte("-----BEGIN NATS USER JWT-----\n\n------END NATS USER JWT------\n"))
	f.Add([]byte("garbage"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := accounts.ParseCreds(data)
		if err != nil {
			return
		}
		if err := subjects.ValidName(id.Name); err != nil {
			t.Fatalf("accepted a credential named %q", id.Name)
		}
		uc, err := jwt.DecodeUserClaims(id.JWT)
		if err != nil {
			t.Fatalf("accepted a JWT that does not decode: %v", err)
		}
		if uc.Subject != id.PublicKey {
			t.Fatalf("identity key %s, JWT subject %s", id.PublicKey, uc.Subject)
		}
		kp, err := jwt.ParseDecoratedUserNKey(data)
		if err != nil {
			t.Fatalf("accepted creds without a user seed: %v", err)
		}
		if pub, _ := kp.PublicKey(); pub != id.PublicKey {
			t.Fatalf("accepted creds whose seed is of %s, not %s", pub, id.PublicKey)
		}
	})
}
