package accounts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Names of the operator and accounts.
const (
	OperatorName = "outpost"
	SysAccount   = "SYS"
	WorkAccount  = "OUTPOST"
)

// ErrNotInitialised is returned by Open for a directory that Init never
// filled.
var ErrNotInitialised = errors.New("not initialised")

// Layout of the data directory. Seeds live under keys/, only ever with mode
// 0600 in a 0700 directory.
const (
	keysDir     = "keys"
	jwtDir      = "jwt"
	credsDir    = "creds"
	operatorJWT = "operator.jwt"
)

// Authority holds the operator and the SYS and OUTPOST accounts. It signs
// credentials, each in an account of its own, and their revocations. Its
// methods are safe for concurrent use.
type Authority struct {
	dir      string
	operator nkeys.KeyPair
	sys      nkeys.KeyPair
	work     nkeys.KeyPair

	operatorJWT string
	sysJWT      string
	workJWT     string
}

// Dir is the data directory the authority lives in.
func (a *Authority) Dir() string { return a.dir }

// CredsPath is where the creds file of the named credential is kept.
func (a *Authority) CredsPath(name string) string {
	return filepath.Join(a.dir, credsDir, name+".creds")
}

// OperatorJWTPath is the operator JWT file the server config points at.
func (a *Authority) OperatorJWTPath() string { return filepath.Join(a.dir, jwtDir, operatorJWT) }

// SysPublicKey is the system account's public key.
func (a *Authority) SysPublicKey() string { return pub(a.sys) }

// WorkPublicKey is the OUTPOST account's public key.
func (a *Authority) WorkPublicKey() string { return pub(a.work) }

// AccountJWTs returns the JWTs of SYS and OUTPOST, keyed by public key.
func (a *Authority) AccountJWTs() map[string]string {
	return map[string]string{pub(a.sys): a.sysJWT, pub(a.work): a.workJWT}
}

// Init opens the authority in dir, creating the operator and accounts on
// first use. It reports whether it created them. A half-made
// directory (keys without JWTs) is refused rather than silently replaced.
func Init(dir string) (a *Authority, created bool, err error) {
	a, err = Open(dir)
	if err == nil {
		return a, false, nil
	}
	if !errors.Is(err, ErrNotInitialised) {
		return nil, false, err
	}
	if err := create(dir); err != nil {
		return nil, false, err
	}
	a, err = Open(dir)
	return a, err == nil, err
}

// Open loads an authority that Init created.
func Open(dir string) (*Authority, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dir, err)
	}
	a := &Authority{dir: abs}
	if _, err := os.Stat(a.OperatorJWTPath()); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (run 'coordinator init --data %s')", abs, ErrNotInitialised, dir)
	}
	if _, err := os.Stat(filepath.Join(abs, keysDir, "role-admin.nk")); err == nil {
		// Credentials of that layout shared one account and would not
		// work against this one.
		return nil, fmt.Errorf("%s was made by an older Outpost (every role in one account): move it aside and run 'coordinator init' again", abs)
	}
	load := func(name string) (nkeys.KeyPair, error) {
		seed, err := os.ReadFile(filepath.Join(abs, keysDir, name+".nk"))
		if err != nil {
			return nil, fmt.Errorf("read key %s: %w", name, err)
		}
		kp, err := nkeys.FromSeed(seed)
		if err != nil {
			return nil, fmt.Errorf("parse key %s: %w", name, err)
		}
		return kp, nil
	}
	if a.operator, err = load("operator"); err != nil {
		return nil, err
	}
	if a.sys, err = load(SysAccount); err != nil {
		return nil, err
	}
	if a.work, err = load(WorkAccount); err != nil {
		return nil, err
	}
	for path, dst := range map[string]*string{
		a.OperatorJWTPath():                            &a.operatorJWT,
		filepath.Join(abs, jwtDir, SysAccount+".jwt"):  &a.sysJWT,
		filepath.Join(abs, jwtDir, WorkAccount+".jwt"): &a.workJWT,
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		*dst = string(b)
	}
	if err := a.refreshWorkAccount(); err != nil {
		return nil, err
	}
	return a, nil
}

// refreshWorkAccount signs the OUTPOST account again if this Outpost
// exports something else than the one that made it, so an upgrade takes
// effect at the next start (the coordinator pushes it to the servers).
func (a *Authority) refreshWorkAccount() error {
	ac, err := jwt.DecodeAccountClaims(a.workJWT)
	if err != nil {
		return fmt.Errorf("decode OUTPOST account: %w", err)
	}
	// Encoding sorts the exports; compare them sorted alike.
	exports := workExports()
	sort.Sort(exports)
	have, _ := json.Marshal(ac.Exports)
	want, _ := json.Marshal(exports)
	if bytes.Equal(have, want) {
		return nil
	}
	ac.Exports = workExports()
	waitPastSecond(ac.IssuedAt)
	tok, err := ac.Encode(a.operator)
	if err != nil {
		return fmt.Errorf("sign OUTPOST account: %w", err)
	}
	if err := writePrivate(filepath.Join(a.dir, jwtDir, WorkAccount+".jwt"), []byte(tok)); err != nil {
		return err
	}
	a.workJWT = tok
	return nil
}

// waitPastSecond returns once the clock is past the second iat (Unix
// seconds): the server ignores an account JWT no newer, to the second,
// than the one it holds (NATS-NOTES point 3).
func waitPastSecond(iat int64) {
	for time.Now().Unix() <= iat {
		time.Sleep(time.Until(time.Unix(iat+1, 0)))
	}
}

// create makes every key and JWT in a fresh staging directory and moves it
// into place, so a crash never leaves a half-initialised data directory.
func create(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	stage, err := os.MkdirTemp(dir, ".init-")
	if err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	defer os.RemoveAll(stage)
	for _, d := range []string{keysDir, jwtDir, credsDir} {
		if err := os.Mkdir(filepath.Join(stage, d), 0o700); err != nil {
			return err
		}
	}
	save := func(name string, kp nkeys.KeyPair) error {
		seed, err := kp.Seed()
		if err != nil {
			return err
		}
		return writePrivate(filepath.Join(stage, keysDir, name+".nk"), seed)
	}
	op, _ := nkeys.CreateOperator()
	sys, _ := nkeys.CreateAccount()
	work, _ := nkeys.CreateAccount()
	keys := map[string]nkeys.KeyPair{"operator": op, SysAccount: sys, WorkAccount: work}
	for name, kp := range keys {
		if err := save(name, kp); err != nil {
			return fmt.Errorf("save key %s: %w", name, err)
		}
	}

	oc := jwt.NewOperatorClaims(pub(op))
	oc.Name = OperatorName
	oc.SystemAccount = pub(sys)
	opJWT, err := oc.Encode(op)
	if err != nil {
		return fmt.Errorf("sign operator: %w", err)
	}
	sc := jwt.NewAccountClaims(pub(sys))
	sc.Name = SysAccount
	sysJWT, err := sc.Encode(op)
	if err != nil {
		return fmt.Errorf("sign SYS account: %w", err)
	}
	workJWT, err := workAccountClaims(pub(work)).Encode(op)
	if err != nil {
		return fmt.Errorf("sign OUTPOST account: %w", err)
	}
	for name, tok := range map[string]string{operatorJWT: opJWT, SysAccount + ".jwt": sysJWT, WorkAccount + ".jwt": workJWT} {
		if err := writePrivate(filepath.Join(stage, jwtDir, name), []byte(tok)); err != nil {
			return err
		}
	}
	// jwt/ goes last: Open treats the operator JWT as the mark of a
	// finished directory.
	for _, d := range []string{keysDir, credsDir, jwtDir} {
		if err := os.Rename(filepath.Join(stage, d), filepath.Join(dir, d)); err != nil {
			return fmt.Errorf("data directory %s holds a partial identity (remove %s/keys and %s/creds to start afresh): %w", dir, dir, dir, err)
		}
	}
	return nil
}

func workAccountClaims(pubKey string) *jwt.AccountClaims {
	ac := jwt.NewAccountClaims(pubKey)
	ac.Name = WorkAccount
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{
		MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
		Streams: jwt.NoLimit, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit,
	}
	ac.Exports = workExports()
	return ac
}

// writePrivate writes data with mode 0600 through a temporary file and a
// rename, so a reader never sees half a key.
func writePrivate(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func pub(kp nkeys.KeyPair) string {
	p, err := kp.PublicKey()
	if err != nil {
		// Only a wiped key pair fails here, which is a programming error.
		panic(fmt.Sprintf("accounts: public key: %v", err))
	}
	return p
}
