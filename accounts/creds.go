package accounts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/outpost-run/outpost/subjects"
)

// roleTagKey is the JWT tag key that records a credential's role, so a
// client can tell its own role from its creds file.
const roleTagKey = "role"

// Request describes a credential to issue.
type Request struct {
	Name string
	Role Role
	// Tags are the pools the credential serves (agents), reads (observers)
	// or may submit to (users). Admins need none.
	Tags []string
	// Expires is the credential's lifetime; zero means it never expires.
	Expires time.Duration
	// Leaf makes an agent credential for a leaf node's link to the hub. A
	// leaf node applies its link's user permissions the other way round
	// (what the hub may send it, what it may send the hub), so such a
	// credential carries none: its account's imports, through which all of
	// the site's traffic passes, are its bounds.
	Leaf bool
}

// Validate checks a request before anything is signed.
func (r Request) Validate() error {
	if err := subjects.ValidName(r.Name); err != nil {
		return err
	}
	if _, err := ParseRole(string(r.Role)); err != nil {
		return err
	}
	if (r.Name == subjects.CoordinatorName) != (r.Role == RoleCoordinator) {
		return fmt.Errorf("name %q is reserved for the coordinator", subjects.CoordinatorName)
	}
	for _, t := range r.Tags {
		if err := subjects.ValidTag(t); err != nil {
			return err
		}
	}
	if len(r.Tags) == 0 && (r.Role == RoleAgent || r.Role == RoleObserver || r.Role == RoleUser) {
		return fmt.Errorf("a %s credential needs at least one tag (--tag)", r.Role)
	}
	if r.Leaf && r.Role != RoleAgent {
		return fmt.Errorf("only an agent credential can serve a leaf node")
	}
	if r.Expires < 0 {
		return fmt.Errorf("expiry %s is negative", r.Expires)
	}
	return nil
}

// Credential is an issued credential: its public record, and Creds, the
// creds file that holds the only copy of its seed. The caller hands Creds
// over and keeps only the record. AccountJWT is the credential's own
// account, which the servers must hold before it can connect.
type Credential struct {
	subjects.Credential
	Creds      []byte
	AccountJWT string
}

// Issue signs a new credential with a fresh key pair. Every credential but
// the coordinator's gets an account of its own, made here and signed by the
// operator, that imports from OUTPOST only what the role needs; its user
// JWT is signed by that account's key, which is then thrown away. The
// account JWT is saved where the embedded server finds it; a caller with a
// server elsewhere must push Credential.AccountJWT to it.
func (a *Authority) Issue(req Request) (Credential, error) {
	if err := req.Validate(); err != nil {
		return Credential{}, fmt.Errorf("issue credential: %w", err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return Credential{}, fmt.Errorf("issue credential: %w", err)
	}
	tags := slices.Clone(req.Tags)
	slices.Sort(tags)
	tags = slices.Compact(tags)
	userPub := pub(kp)
	uc := jwt.NewUserClaims(userPub)
	uc.Name = req.Name
	uc.Tags.Add(roleTagKey + ":" + string(req.Role))
	for _, t := range tags {
		uc.Tags.Add(TagKey + ":" + t)
	}
	if !req.Leaf {
		uc.Permissions = Permissions(req.Role, req.Name, tags)
	}
	if req.Expires > 0 {
		uc.Expires = time.Now().Add(req.Expires).Unix()
	}
	signer, account, accountJWT := a.work, pub(a.work), ""
	if req.Role != RoleCoordinator {
		if signer, err = nkeys.CreateAccount(); err != nil {
			return Credential{}, fmt.Errorf("issue credential: %w", err)
		}
		account = pub(signer)
		if accountJWT, err = a.signAccount(a.credentialAccount(account, req.Role, req.Name, tags)); err != nil {
			return Credential{}, fmt.Errorf("issue credential %s: %w", req.Name, err)
		}
	}
	tok, err := uc.Encode(signer)
	if err != nil {
		return Credential{}, fmt.Errorf("sign credential %s: %w", req.Name, err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return Credential{}, fmt.Errorf("issue credential: %w", err)
	}
	creds, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		return Credential{}, fmt.Errorf("format creds: %w", err)
	}
	c := Credential{Credential: subjects.Credential{Name: req.Name, Role: string(req.Role), Tags: tags,
		PublicKey: userPub, Account: account, JWT: tok, IssuedAt: time.Unix(uc.IssuedAt, 0).UTC()},
		Creds: creds, AccountJWT: accountJWT}
	if uc.Expires > 0 {
		e := time.Unix(uc.Expires, 0).UTC()
		c.ExpiresAt = &e
	}
	return c, nil
}

// credentialAccount is the account of one credential: no JetStream of its
// own, and imports of exactly the role's reach. A reply subject that a
// request aims anywhere is read in this account, where nothing but those
// imports exists.
func (a *Authority) credentialAccount(account string, role Role, name string, tags []string) *jwt.AccountClaims {
	ac := jwt.NewAccountClaims(account)
	ac.Name = string(role) + ":" + name
	ac.Imports = reachOf(role, name, tags).imports(pub(a.work))
	return ac
}

// CredentialAccounts returns the JWT of every credential account signed
// here, keyed by public key: the latest of each, revocations included.
func (a *Authority) CredentialAccounts() (map[string]string, error) {
	paths, err := filepath.Glob(filepath.Join(a.ResolverDir(), "A*.jwt"))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read account: %w", err)
		}
		ac, err := jwt.DecodeAccountClaims(string(b))
		if err != nil || ac.Issuer != pub(a.operator) || ac.Subject == pub(a.work) || ac.Subject == pub(a.sys) {
			continue // not one of ours, or preloaded anyway
		}
		out[ac.Subject] = string(b)
	}
	return out, nil
}

// signAccount signs account claims with the operator and saves them in the
// resolver directory, where the embedded server looks accounts up.
func (a *Authority) signAccount(ac *jwt.AccountClaims) (string, error) {
	tok, err := ac.Encode(a.operator)
	if err != nil {
		return "", fmt.Errorf("sign account: %w", err)
	}
	if err := os.MkdirAll(a.ResolverDir(), 0o700); err != nil {
		return "", fmt.Errorf("save account: %w", err)
	}
	if err := writePrivate(filepath.Join(a.ResolverDir(), ac.Subject+".jwt"), []byte(tok)); err != nil {
		return "", fmt.Errorf("save account: %w", err)
	}
	return tok, nil
}

// SysUser returns a fresh user JWT and seed of the system account, with
// which the coordinator pushes account updates to the servers and hears of
// connections. It is root: whoever holds it can overwrite any account, so it
// is made in memory and never written anywhere.
func (a *Authority) SysUser() (jwtToken, seed string, err error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", "", err
	}
	uc := jwt.NewUserClaims(pub(kp))
	uc.Name = "outpost-sys"
	tok, err := uc.Encode(a.sys)
	if err != nil {
		return "", "", fmt.Errorf("sign sys credential: %w", err)
	}
	s, err := kp.Seed()
	return tok, string(s), err
}

// Revoke shuts a credential out: its account is signed again with the
// user's key revoked, and the new account JWT is
// returned for the caller to push to the servers (it is also saved for the
// embedded server). A revocation covers every JWT of that key issued up to
// now, which is why a revoked key is never issued again.
func (a *Authority) Revoke(c subjects.Credential) (string, error) {
	if c.Account == "" || c.Account == pub(a.work) {
		return "", fmt.Errorf("credential %s has no account of its own to revoke it in", c.Name)
	}
	ac := a.credentialAccount(c.Account, Role(c.Role), c.Name, c.Tags)
	// Revocation only: a connection limit of 0 would close the connection
	// too, but as "maximum connections exceeded", and its holder would not
	// learn that it was revoked, and keep retrying.
	ac.Revoke(c.PublicKey)
	// The server ignores an account JWT no newer, to the second, than the
	// one it holds (NATS-NOTES point 3), and that one was made with the
	// credential.
	waitPastSecond(c.IssuedAt.Unix())
	return a.signAccount(ac)
}

// SaveCreds writes a creds file into the data directory with mode 0600,
// and returns its path.
func (a *Authority) SaveCreds(name string, creds []byte) (string, error) {
	p := a.CredsPath(name)
	if err := writePrivate(p, creds); err != nil {
		return "", err
	}
	return p, nil
}

// Identity is what a creds file says about its holder.
type Identity struct {
	Name      string
	Role      Role
	Tags      []string
	PublicKey string
	Account   string
	ExpiresAt time.Time // zero when it never expires
	IssuedAt  time.Time
	JWT       string
}

// Record is the public record of the credential, as the registry keeps it.
func (id Identity) Record() subjects.Credential {
	c := subjects.Credential{Name: id.Name, Role: string(id.Role), Tags: id.Tags, PublicKey: id.PublicKey, Account: id.Account, JWT: id.JWT, IssuedAt: id.IssuedAt}
	if !id.ExpiresAt.IsZero() {
		e := id.ExpiresAt
		c.ExpiresAt = &e
	}
	return c
}

// ReadCreds loads a creds file and reads the identity in its JWT. Its errors
// say what to do about a missing, unreadable or malformed file.
func ReadCreds(path string) (Identity, []byte, error) {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Identity{}, nil, fmt.Errorf("creds file %s does not exist: pass --creds FILE or set OUTPOST_CREDS", path)
	case err != nil:
		return Identity{}, nil, fmt.Errorf("read creds file: %w", err)
	}
	id, err := ParseCreds(data)
	if err != nil {
		return Identity{}, nil, fmt.Errorf("creds file %s: %w", path, err)
	}
	return id, data, nil
}

// ParseCreds reads the identity in a creds file's contents. It checks the
// shape and the seed, not the signature chain: the server does that.
func ParseCreds(data []byte) (Identity, error) {
	tok, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		return Identity{}, fmt.Errorf("not a NATS creds file: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return Identity{}, fmt.Errorf("not a NATS creds file: user JWT: %w", err)
	}
	kp, err := jwt.ParseDecoratedUserNKey(data)
	if err != nil {
		return Identity{}, fmt.Errorf("not a NATS creds file: seed: %w", err)
	}
	if p, _ := kp.PublicKey(); p != uc.Subject {
		return Identity{}, errors.New("the seed does not belong to the JWT in this creds file")
	}
	id := Identity{Name: uc.Name, PublicKey: uc.Subject, Account: uc.Issuer, JWT: tok, IssuedAt: time.Unix(uc.IssuedAt, 0).UTC()}
	if uc.Expires > 0 {
		id.ExpiresAt = time.Unix(uc.Expires, 0)
	}
	for _, t := range uc.Tags {
		k, v, ok := strings.Cut(t, ":")
		switch {
		case !ok:
		case k == roleTagKey:
			id.Role = Role(v)
		case k == TagKey:
			id.Tags = append(id.Tags, v)
		}
	}
	if err := subjects.ValidName(id.Name); err != nil {
		return Identity{}, fmt.Errorf("credential name: %w", err)
	}
	return id, nil
}

// Exists reports whether the creds file of name is in the data directory.
func (a *Authority) Exists(name string) bool {
	_, err := os.Stat(a.CredsPath(name))
	return err == nil
}

// EnsureCreds makes sure the data directory holds a creds file for req,
// issuing one on first use, and returns its path. A later call returns the
// same file.
func (a *Authority) EnsureCreds(req Request) (string, error) {
	if a.Exists(req.Name) {
		return a.CredsPath(req.Name), nil
	}
	c, err := a.Issue(req)
	if err != nil {
		return "", err
	}
	return a.SaveCreds(req.Name, c.Creds)
}

// CredsFiles lists the creds files kept in the data directory.
func (a *Authority) CredsFiles() ([]string, error) {
	return filepath.Glob(filepath.Join(a.dir, credsDir, "*.creds"))
}
