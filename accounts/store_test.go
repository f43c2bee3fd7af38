package accounts_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/subjects"
)

func newAuthority(t *testing.T) *accounts.Authority {
	t.Helper()
	a, created, err := accounts.Init(filepath.Join(t.TempDir(), "data"))
	if err != nil || !created {
		t.Fatalf("Init = %v, created %v", err, created)
	}
	return a
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestInitIsIdempotent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a, created, err := accounts.Init(dir)
	if err != nil || !created {
		t.Fatalf("first Init = %v, created %v", err, created)
	}
	b, created, err := accounts.Init(dir)
	if err != nil || created {
		t.Fatalf("second Init = %v, created %v", err, created)
	}
	if a.WorkPublicKey() != b.WorkPublicKey() || a.SysPublicKey() != b.SysPublicKey() {
		t.Error("the second Init made new account keys")
	}
	if !reflect.DeepEqual(a.AccountJWTs(), b.AccountJWTs()) {
		t.Error("the second Init changed the account JWTs")
	}
	o, err := accounts.Open(dir)
	if err != nil || o.WorkPublicKey() != a.WorkPublicKey() {
		t.Fatalf("Open = %v", err)
	}
	// Credentials issued before and after the reload live in accounts
	// signed by the same operator: the one the servers trust.
	c1, err := a.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := b.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	op := operatorKey(t, a)
	if i1, i2 := accountIssuer(t, c1.AccountJWT), accountIssuer(t, c2.AccountJWT); i1 != op || i2 != op {
		t.Errorf("accounts signed by %s and %s, not the operator %s", i1, i2, op)
	}
	// Nothing of the staging directory is left behind.
	left, _ := filepath.Glob(filepath.Join(dir, ".init-*"))
	if len(left) > 0 {
		t.Errorf("staging left behind: %v", left)
	}
}

// operatorKey is the operator's public key, read from the JWT the servers
// are configured with.
func operatorKey(t *testing.T, a *accounts.Authority) string {
	t.Helper()
	b, err := os.ReadFile(a.OperatorJWTPath())
	if err != nil {
		t.Fatal(err)
	}
	oc, err := jwt.DecodeOperatorClaims(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return oc.Subject
}

func accountIssuer(t *testing.T, tok string) string {
	t.Helper()
	ac, err := jwt.DecodeAccountClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	return ac.Issuer
}

func TestInitFileModes(t *testing.T) {
	a := newAuthority(t)
	if m := mode(t, a.Dir()); m != 0o700 {
		t.Errorf("data directory has mode %o", m)
	}
	for _, d := range []string{"keys", "jwt", "creds"} {
		if m := mode(t, filepath.Join(a.Dir(), d)); m != 0o700 {
			t.Errorf("%s/ has mode %o", d, m)
		}
	}
	seeds, _ := filepath.Glob(filepath.Join(a.Dir(), "keys", "*.nk"))
	// The operator, SYS and OUTPOST: credential accounts keep no key.
	if len(seeds) != 3 {
		t.Errorf("keys/ holds %d seeds: %v", len(seeds), seeds)
	}
	jwts, _ := filepath.Glob(filepath.Join(a.Dir(), "jwt", "*.jwt"))
	for _, f := range append(seeds, jwts...) {
		if m := mode(t, f); m != 0o600 {
			t.Errorf("%s has mode %o", f, m)
		}
	}
	p, err := a.EnsureCreds(accounts.Request{Name: "admin", Role: accounts.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(t, p); m != 0o600 {
		t.Errorf("creds file has mode %o", m)
	}
	if m := mode(t, a.ResolverDir()); m != 0o700 {
		t.Errorf("resolver/ has mode %o", m)
	}
	accts, _ := filepath.Glob(filepath.Join(a.ResolverDir(), "*.jwt"))
	if len(accts) != 1 {
		t.Errorf("resolver/ holds %v, want the admin's account", accts)
	}
	for _, f := range accts {
		if m := mode(t, f); m != 0o600 {
			t.Errorf("%s has mode %o", f, m)
		}
	}
	conf, err := a.WriteServerConfig(accounts.ServerConfig{Host: "127.0.0.1", Port: 4222})
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(t, conf); m != 0o600 {
		t.Errorf("server config has mode %o", m)
	}
}

func TestInitRefusesHalfMadeDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keys", "operator.nk"), []byte("SO..."), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := accounts.Init(dir); err == nil || !strings.Contains(err.Error(), "partial identity") {
		t.Fatalf("Init over a half-made directory = %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "keys", "operator.nk")); string(b) != "SO..." {
		t.Error("Init replaced a key it found")
	}
	if _, err := accounts.Open(t.TempDir()); !errors.Is(err, accounts.ErrNotInitialised) {
		t.Errorf("Open of an empty directory = %v", err)
	}
}

func TestWorkAccountHoldsJetStreamAndExports(t *testing.T) {
	a := newAuthority(t)
	ac, err := jwt.DecodeAccountClaims(a.AccountJWTs()[a.WorkPublicKey()])
	if err != nil {
		t.Fatal(err)
	}
	if ac.Name != accounts.WorkAccount || !ac.Limits.IsJSEnabled() {
		t.Errorf("account %q, JetStream %v", ac.Name, ac.Limits.IsJSEnabled())
	}
	if len(ac.SigningKeys) != 0 || len(ac.Imports) != 0 {
		t.Errorf("OUTPOST has signing keys %v and imports %v; it should have neither", ac.SigningKeys, ac.Imports)
	}
	// Nothing of the JetStream API but a consumer's pull and ack, and the
	// direct get of job statuses, is offered: the rest would act on the
	// importer's own account anyway.
	for _, e := range ac.Exports {
		if s := string(e.Subject); strings.HasPrefix(s, "$JS.") && s != "$JS.API.CONSUMER.MSG.NEXT.>" && s != "$JS.ACK.>" &&
			s != "$JS.API.DIRECT.GET.OUTPOST_EVENTS.outpost.ev.*.*.*.status" {
			t.Errorf("OUTPOST exports %s", s)
		}
	}
}

func TestIssue(t *testing.T) {
	a := newAuthority(t)
	c, err := a.Issue(accounts.Request{Name: "gpu-box", Role: accounts.RoleAgent, Tags: []string{"gpu", "cpu", "gpu"}, Expires: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Tags, []string{"cpu", "gpu"}) {
		t.Errorf("tags %v, want sorted and without duplicates", c.Tags)
	}
	if c.ExpiresAt == nil || time.Until(*c.ExpiresAt) <= 0 || time.Until(*c.ExpiresAt) > time.Hour {
		t.Errorf("expires at %v", c.ExpiresAt)
	}
	// The user JWT is signed by the credential's own account, directly: no
	// signing key stands between them.
	uc, err := jwt.DecodeUserClaims(c.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if uc.Name != "gpu-box" || uc.Subject != c.PublicKey || uc.Issuer != c.Account || uc.IssuerAccount != "" {
		t.Errorf("claims: name %q subject %q issuer %q issuer account %q (account %s)", uc.Name, uc.Subject, uc.Issuer, uc.IssuerAccount, c.Account)
	}
	if c.Account == "" || c.Account == a.WorkPublicKey() || c.Account == a.SysPublicKey() {
		t.Errorf("account %q is not one of its own", c.Account)
	}
	// That account is signed by the operator, holds no JetStream, exports
	// nothing, and imports exactly the role's reach from OUTPOST.
	ac := credentialAccount(t, a, c)
	if ac.Name != "agent:gpu-box" {
		t.Errorf("account named %q", ac.Name)
	}
	job := "$JS.API.CONSUMER.MSG.NEXT.OUTPOST_JOBS."
	last := "$JS.API.DIRECT.GET.OUTPOST_EVENTS."
	wantSend := []string{
		job + "agents-cpu", "$JS.ACK.OUTPOST_JOBS.agents-cpu.>", last + "outpost.ev.cpu.*.*.status", "outpost.ev.cpu.*.*.status", "outpost.ev.cpu.*.*.log", "outpost.hb.cpu.gpu-box",
		job + "agents-gpu", "$JS.ACK.OUTPOST_JOBS.agents-gpu.>", last + "outpost.ev.gpu.*.*.status", "outpost.ev.gpu.*.*.status", "outpost.ev.gpu.*.*.log", "outpost.hb.gpu.gpu-box",
	}
	wantHear := []string{"outpost.ctl.cpu.*", "outpost.ctl.gpu.*"}
	checkReach(t, a, ac, uc, "gpu-box", wantSend, wantHear)

	id, err := accounts.ParseCreds(c.Creds)
	if err != nil {
		t.Fatal(err)
	}
	if id.Name != "gpu-box" || id.Role != accounts.RoleAgent || !slices.Equal(id.Tags, c.Tags) ||
		id.PublicKey != c.PublicKey || id.Account != c.Account || id.JWT != c.JWT || id.ExpiresAt.IsZero() {
		t.Errorf("creds read back as %+v", id)
	}
	// Every credential has a key pair and an account of its own.
	d, err := a.Issue(accounts.Request{Name: "gpu-box", Role: accounts.RoleAgent, Tags: []string{"gpu"}})
	if err != nil {
		t.Fatal(err)
	}
	if d.PublicKey == c.PublicKey || d.Account == c.Account {
		t.Error("two credentials share a key or an account")
	}
	if d.ExpiresAt != nil {
		t.Error("a credential without expiry expires")
	}
}

// TestIssueReachOfEachRole spells out, role by role, everything a
// credential can reach: its account imports exactly this and its user JWT
// is permitted exactly this, plus its inbox.
func TestIssueReachOfEachRole(t *testing.T) {
	a := newAuthority(t)
	readers := func(name string, streams ...string) []string {
		var out []string
		for _, s := range streams {
			for slot := 1; slot <= subjects.ReaderSlots; slot++ {
				out = append(out, fmt.Sprintf("$JS.API.CONSUMER.MSG.NEXT.%s.r_%s_%d", s, name, slot))
			}
		}
		return out
	}
	for _, tc := range []struct {
		req        accounts.Request
		send, hear []string
	}{
		{
			accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a", "b"}},
			append([]string{"outpost.api.alice.*"}, readers("alice", "OUTPOST_EVENTS")...),
			[]string{"outpost.live.a.alice.>", "outpost.live.b.alice.>"},
		},
		{
			accounts.Request{Name: "obs", Role: accounts.RoleObserver, Tags: []string{"a"}},
			append([]string{"outpost.api.obs.*"}, readers("obs", "OUTPOST_EVENTS", "OUTPOST_AUDIT")...),
			[]string{"outpost.live.a.*.>"},
		},
		{
			accounts.Request{Name: "root", Role: accounts.RoleAdmin},
			append([]string{"outpost.api.root.*"}, readers("root", "OUTPOST_EVENTS", "OUTPOST_AUDIT")...),
			[]string{"outpost.live.>"},
		},
	} {
		t.Run(string(tc.req.Role), func(t *testing.T) {
			c, err := a.Issue(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			uc, err := jwt.DecodeUserClaims(c.JWT)
			if err != nil {
				t.Fatal(err)
			}
			checkReach(t, a, credentialAccount(t, a, c), uc, tc.req.Name, tc.send, tc.hear)
		})
	}

	// The coordinator alone lives in OUTPOST, signed by its key, and may do
	// anything there.
	c, err := a.Issue(accounts.Request{Name: subjects.CoordinatorName, Role: accounts.RoleCoordinator})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(c.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if c.Account != a.WorkPublicKey() || uc.Issuer != a.WorkPublicKey() || c.AccountJWT != "" {
		t.Errorf("coordinator in account %s, issued by %s, with account JWT %q", c.Account, uc.Issuer, c.AccountJWT)
	}
	if !slices.Equal(uc.Pub.Allow, jwt.StringList{">"}) || !slices.Equal(uc.Sub.Allow, jwt.StringList{">"}) {
		t.Errorf("coordinator permissions %+v", uc.Permissions)
	}
}

// credentialAccount decodes the account JWT of c, checks that the operator
// signed it for c's account, that it is the one saved for the embedded
// server, and that it has nothing but imports.
func credentialAccount(t *testing.T, a *accounts.Authority, c accounts.Credential) *jwt.AccountClaims {
	t.Helper()
	ac, err := jwt.DecodeAccountClaims(c.AccountJWT)
	if err != nil {
		t.Fatal(err)
	}
	if ac.Subject != c.Account || ac.Issuer != operatorKey(t, a) {
		t.Errorf("account JWT for %s issued by %s; want %s by the operator", ac.Subject, ac.Issuer, c.Account)
	}
	if saved, err := os.ReadFile(filepath.Join(a.ResolverDir(), c.Account+".jwt")); err != nil || string(saved) != c.AccountJWT {
		t.Errorf("the account JWT is not saved for the embedded server: %v", err)
	}
	if ac.Limits.IsJSEnabled() || len(ac.Exports) > 0 || len(ac.SigningKeys) > 0 {
		t.Errorf("account has JetStream %v, exports %v, signing keys %v", ac.Limits.IsJSEnabled(), ac.Exports, ac.SigningKeys)
	}
	return ac
}

// checkReach checks that an account imports from OUTPOST the services
// send and the streams hear, nothing else, sharing the caller's identity
// with the API only; and that its user may publish send (and ask for the
// info of the consumers in it) and subscribe hear and its own inbox, and
// nothing else.
func checkReach(t *testing.T, a *accounts.Authority, ac *jwt.AccountClaims, uc *jwt.UserClaims, name string, send, hear []string) {
	t.Helper()
	var gotSend, gotHear []string
	for _, im := range ac.Imports {
		if im.Account != a.WorkPublicKey() {
			t.Errorf("import %s from %s, not OUTPOST", im.Subject, im.Account)
		}
		if im.LocalSubject != "" || (im.To != "" && im.To != im.Subject) {
			t.Errorf("import %s is remapped", im.Subject)
		}
		if share := strings.HasPrefix(string(im.Subject), "outpost.api."); im.Share != share {
			t.Errorf("import %s shares the caller's identity: %v", im.Subject, im.Share)
		}
		switch im.Type {
		case jwt.Service:
			gotSend = append(gotSend, string(im.Subject))
		case jwt.Stream:
			gotHear = append(gotHear, string(im.Subject))
		default:
			t.Errorf("import %s of type %v", im.Subject, im.Type)
		}
	}
	sameSet(t, "imported services", gotSend, send)
	sameSet(t, "imported streams", gotHear, hear)
	// Permitted, not imported: the info of each consumer it pulls, which
	// tools ask for first; in its own account it gets no answer at once.
	pubs := slices.Clone(send)
	for _, s := range send {
		if c, ok := strings.CutPrefix(s, "$JS.API.CONSUMER.MSG.NEXT."); ok {
			pubs = append(pubs, "$JS.API.CONSUMER.INFO."+c)
		}
	}
	sameSet(t, "publish permissions", uc.Pub.Allow, pubs)
	sameSet(t, "subscribe permissions", uc.Sub.Allow, append([]string{subjects.Inbox(name) + ".>"}, hear...))
	if len(uc.Pub.Deny) > 0 || len(uc.Sub.Deny) > 0 || uc.Resp != nil {
		t.Errorf("permissions carry more: %+v", uc.Permissions)
	}
}

func sameSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func TestRevoke(t *testing.T) {
	a := newAuthority(t)
	c, err := a.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	issued := credentialAccount(t, a, c)
	tok, err := a.Revoke(c.Credential)
	if err != nil {
		t.Fatal(err)
	}
	revoked := credentialAccount(t, a, accounts.Credential{Credential: c.Credential, AccountJWT: tok})
	// A server keeps an account JWT that is no newer, to the second, than
	// the one it holds (NATS-NOTES point 3).
	if revoked.IssuedAt <= issued.IssuedAt {
		t.Errorf("the revocation was issued at %d, the account at %d", revoked.IssuedAt, issued.IssuedAt)
	}
	uc, err := jwt.DecodeUserClaims(c.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if !revoked.IsClaimRevoked(uc) || len(revoked.Revocations) != 1 {
		t.Errorf("revocations %v do not cover %s", revoked.Revocations, c.PublicKey)
	}
	// Only the revocation changes: a connection limit would shut the holder
	// out as "maximum connections exceeded", and it would keep retrying
	// instead of learning that it was revoked.
	if !reflect.DeepEqual(revoked.Imports, issued.Imports) || !reflect.DeepEqual(revoked.Limits, issued.Limits) {
		t.Errorf("revocation changed imports %v or limits %+v, were %v and %+v", revoked.Imports, revoked.Limits, issued.Imports, issued.Limits)
	}
	// A key that never was this credential's is not revoked with it.
	other, err := a.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if ou, _ := jwt.DecodeUserClaims(other.JWT); revoked.IsClaimRevoked(ou) {
		t.Error("a credential issued again under the name is revoked too")
	}

	// Revocation works on the credential's own account, never on OUTPOST,
	// which holds the coordinator and every stream.
	coord, err := a.Issue(accounts.Request{Name: subjects.CoordinatorName, Role: accounts.RoleCoordinator})
	if err != nil {
		t.Fatal(err)
	}
	noAccount := c.Credential
	noAccount.Account = ""
	for what, cred := range map[string]subjects.Credential{"no account": noAccount, "the coordinator": coord.Credential} {
		if tok, err := a.Revoke(cred); err == nil || !strings.Contains(err.Error(), "no account of its own") {
			t.Errorf("%s: Revoke = %v", what, err)
		} else if tok != "" {
			t.Errorf("%s: Revoke signed %q anyway", what, tok)
		}
	}
	if _, err := os.Stat(filepath.Join(a.ResolverDir(), a.WorkPublicKey()+".jwt")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an OUTPOST account JWT was signed: %v", err)
	}
}

func TestIssueValidatesFirst(t *testing.T) {
	a := newAuthority(t)
	tags := []string{"a"}
	for _, tc := range []struct {
		name string
		req  accounts.Request
		want string
	}{
		{"dotted name", accounts.Request{Name: "alice.evil", Role: accounts.RoleUser, Tags: tags}, `"alice.evil"`},
		{"wildcard name", accounts.Request{Name: "*", Role: accounts.RoleUser, Tags: tags}, `"*"`},
		{"full wildcard name", accounts.Request{Name: ">", Role: accounts.RoleAdmin}, `">"`},
		{"upper-case name", accounts.Request{Name: "Alice", Role: accounts.RoleUser, Tags: tags}, `"Alice"`},
		{"empty name", accounts.Request{Name: "", Role: accounts.RoleAdmin}, `""`},
		{"long name", accounts.Request{Name: strings.Repeat("a", 65), Role: accounts.RoleAdmin}, "1-64"},
		{"unicode name", accounts.Request{Name: "ålice", Role: accounts.RoleAdmin}, "name"},
		{"tag with colon", accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"pool:*"}}, `"pool:*"`},
		{"wildcard tag", accounts.Request{Name: "a1", Role: accounts.RoleAgent, Tags: []string{"*"}}, `"*"`},
		{"full wildcard tag", accounts.Request{Name: "a1", Role: accounts.RoleAgent, Tags: []string{">"}}, `">"`},
		{"dotted tag", accounts.Request{Name: "a1", Role: accounts.RoleAgent, Tags: []string{"a.b"}}, `"a.b"`},
		{"one bad tag of two", accounts.Request{Name: "a1", Role: accounts.RoleAgent, Tags: []string{"a", "B"}}, `"B"`},
		{"reserved name", accounts.Request{Name: subjects.CoordinatorName, Role: accounts.RoleUser, Tags: tags}, "reserved"},
		{"reserved name as admin", accounts.Request{Name: subjects.CoordinatorName, Role: accounts.RoleAdmin}, "reserved"},
		{"coordinator role under another name", accounts.Request{Name: "boss", Role: accounts.RoleCoordinator}, "reserved"},
		{"agent without tag", accounts.Request{Name: "a1", Role: accounts.RoleAgent}, "at least one tag"},
		{"user without tag", accounts.Request{Name: "alice", Role: accounts.RoleUser}, "at least one tag"},
		{"observer without tag", accounts.Request{Name: "obs", Role: accounts.RoleObserver}, "at least one tag"},
		{"unknown role", accounts.Request{Name: "x", Role: "root"}, `"root"`},
		{"empty role", accounts.Request{Name: "x"}, "role"},
		{"negative expiry", accounts.Request{Name: "x", Role: accounts.RoleAdmin, Expires: -time.Second}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.req.Validate(); err == nil {
				t.Error("Validate accepted it")
			}
			c, err := a.Issue(tc.req)
			if err == nil {
				t.Fatalf("issued %+v", c)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if c.JWT != "" || c.Creds != nil {
				t.Error("a refused request still got a signed credential")
			}
		})
	}
	for _, req := range []accounts.Request{
		{Name: "admin", Role: accounts.RoleAdmin},
		{Name: subjects.CoordinatorName, Role: accounts.RoleCoordinator},
		{Name: "alice", Role: accounts.RoleUser, Tags: tags},
		{Name: "obs", Role: accounts.RoleObserver, Tags: []string{"a", "b"}},
		{Name: strings.Repeat("a", 64), Role: accounts.RoleAgent, Tags: []string{strings.Repeat("t", 64)}},
	} {
		if _, err := a.Issue(req); err != nil {
			t.Errorf("Issue(%+v) = %v", req, err)
		}
	}
}

func TestEnsureCreds(t *testing.T) {
	a := newAuthority(t)
	req := accounts.Request{Name: "local-agent", Role: accounts.RoleAgent, Tags: []string{"local"}}
	p1, err := a.EnsureCreds(req)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(p1)
	p2, err := a.EnsureCreds(req)
	if err != nil || p2 != p1 {
		t.Fatalf("second EnsureCreds = %q, %v", p2, err)
	}
	if b2, _ := os.ReadFile(p2); string(b2) != string(b1) {
		t.Error("the second EnsureCreds issued a new credential")
	}
	if !a.Exists("local-agent") || a.Exists("nobody") {
		t.Error("Exists is wrong")
	}
	files, err := a.CredsFiles()
	if err != nil || len(files) != 1 || files[0] != p1 {
		t.Errorf("CredsFiles = %v, %v", files, err)
	}
	if _, err := a.EnsureCreds(accounts.Request{Name: "bad.name", Role: accounts.RoleAdmin}); err == nil {
		t.Error("EnsureCreds issued a bad name")
	}
}

func TestReadCredsErrors(t *testing.T) {
	a := newAuthority(t)
	dir := t.TempDir()
	_, _, err := accounts.ReadCreds(filepath.Join(dir, "missing.creds"))
	if err == nil || !strings.Contains(err.Error(), "--creds") || !strings.Contains(err.Error(), "OUTPOST_CREDS") {
		t.Errorf("missing file: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.creds")
	os.WriteFile(garbage, []byte("this is not a creds file\n"), 0o600)
	if _, _, err := accounts.ReadCreds(garbage); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Errorf("garbage: %v", err)
	}
	if _, _, err := accounts.ReadCreds(dir); err == nil {
		t.Error("a directory read as creds")
	}

	alice, _ := a.Issue(accounts.Request{Name: "alice", Role: accounts.RoleUser, Tags: []string{"a"}})
	bob, _ := a.Issue(accounts.Request{Name: "bob", Role: accounts.RoleUser, Tags: []string{"a"}})
	mixed := []byte(strings.Replace(string(alice.Creds), string(seedOf(t, alice.Creds)), string(seedOf(t, bob.Creds)), 1))
	if _, err := accounts.ParseCreds(mixed); err == nil || !strings.Contains(err.Error(), "seed does not belong") {
		t.Errorf("alice's JWT with bob's seed: %v", err)
	}
	// A JWT alone, with no seed, is no creds file.
	if _, err := accounts.ParseCreds([]byte(alice.JWT)); err == nil {
		t.Error("a bare JWT parsed as creds")
	}
	// A creds file whose JWT was edited no longer verifies.
	if _, err := accounts.ParseCreds(tamper(t, alice.Creds, "pool:a", "pool:b")); err == nil {
		t.Error("a tampered JWT parsed")
	}
	p, _ := a.SaveCreds("alice", alice.Creds)
	id, data, err := accounts.ReadCreds(p)
	if err != nil || id.Name != "alice" || string(data) != string(alice.Creds) {
		t.Errorf("ReadCreds = %+v, %v", id, err)
	}
}

// seedOf returns the seed in a creds file.
func seedOf(t testing.TB, creds []byte) []byte {
	t.Helper()
	kp, err := jwt.ParseDecoratedUserNKey(creds)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return seed
}

func TestWriteServerConfigLoads(t *testing.T) {
	a := newAuthority(t)
	p, err := a.WriteServerConfig(accounts.ServerConfig{Host: "127.0.0.1", Port: 4333, ServerName: "edge-1"})
	if err != nil {
		t.Fatal(err)
	}
	if p != a.ServerConfigPath() {
		t.Errorf("written to %s, not %s", p, a.ServerConfigPath())
	}
	opts, err := server.ProcessConfigFile(p)
	if err != nil {
		t.Fatalf("nats-server does not load the config: %v", err)
	}
	if opts.Host != "127.0.0.1" || opts.Port != 4333 || opts.ServerName != "edge-1" {
		t.Errorf("listen %s:%d name %q", opts.Host, opts.Port, opts.ServerName)
	}
	if !opts.JetStream || opts.StoreDir != a.JetStreamDir() {
		t.Errorf("JetStream %v in %q", opts.JetStream, opts.StoreDir)
	}
	if opts.SystemAccount != a.SysPublicKey() {
		t.Errorf("system account %q", opts.SystemAccount)
	}
	if len(opts.TrustedOperators) != 1 || opts.TrustedOperators[0].Name != accounts.OperatorName {
		t.Errorf("trusted operators %v", opts.TrustedOperators)
	}
	if _, ok := opts.AccountResolver.(*server.DirAccResolver); !ok {
		t.Errorf("resolver is %T, not a full (directory) resolver", opts.AccountResolver)
	}
	if opts.AccountResolver != nil {
		opts.AccountResolver.Close()
	}
	// The config and what it includes.
	var text []byte
	confs, _ := filepath.Glob(filepath.Join(a.Dir(), "*.conf"))
	for _, f := range confs {
		b, _ := os.ReadFile(f)
		text = append(text, b...)
		if m := mode(t, f); m != 0o600 {
			t.Errorf("%s has mode %o", f, m)
		}
	}
	for key, tok := range a.AccountJWTs() {
		if !strings.Contains(string(text), key+`: "`+tok+`"`) {
			t.Errorf("account %s is not preloaded", key)
		}
	}
	if opts.NoAuthUser != "" || len(opts.Users) > 0 || len(opts.Nkeys) > 0 {
		t.Error("the config lets someone in without a JWT")
	}
	// Default name.
	if _, err := a.WriteServerConfig(accounts.ServerConfig{Host: "0.0.0.0", Port: 4222}); err != nil {
		t.Fatal(err)
	}
	opts, err = server.ProcessConfigFile(p)
	if err != nil || opts.ServerName != "outpost" {
		t.Fatalf("default server name: %v", err)
	}
	if opts.AccountResolver != nil {
		opts.AccountResolver.Close()
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range accounts.Roles {
		if got, err := accounts.ParseRole(string(r)); err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, s := range []string{"", "Admin", "root", "admin "} {
		if _, err := accounts.ParseRole(s); err == nil {
			t.Errorf("ParseRole(%q) accepted", s)
		}
	}
}
