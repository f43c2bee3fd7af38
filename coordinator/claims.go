package coordinator

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/accounts"
)

// DialSys connects to url as a fresh system-account user, made in memory,
// for Config.Sys: through it the coordinator pushes revocations and sees
// connections come and go. It keeps reconnecting for as long as it lives.
func DialSys(auth *accounts.Authority, url string, opts ...nats.Option) (*nats.Conn, error) {
	tok, seed, err := auth.SysUser()
	if err != nil {
		return nil, err
	}
	opts = append([]nats.Option{nats.UserJWTAndSeed(tok, seed), nats.Name("outpost-coordinator-sys"),
		nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to the system account at %s: %w", url, err)
	}
	return nc, nil
}

// System-account subjects through which account JWTs are pushed to, and
// read back from, every server of the deployment.
const (
	claimsUpdate = "$SYS.REQ.CLAIMS.UPDATE"
	claimsLookup = "$SYS.REQ.ACCOUNT.%s.CLAIMS.LOOKUP"
)

type claimsReply struct {
	Data *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"data"`
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

// pushAccount sends an account JWT to the servers and reads it back, so a
// revocation is known to be in force before the caller is told it is. The
// same path serves an embedded server and a stock cluster.
func pushAccount(ctx context.Context, sys *nats.Conn, account, jwt string) error {
	m, err := sys.RequestWithContext(ctx, claimsUpdate, []byte(jwt))
	if err != nil {
		return fmt.Errorf("push account JWT: %w", err)
	}
	var r claimsReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return fmt.Errorf("push account JWT: malformed reply: %w", err)
	}
	if r.Error != nil {
		return fmt.Errorf("push account JWT: server refused it (%d): %s", r.Error.Code, r.Error.Description)
	}
	m, err = sys.RequestWithContext(ctx, fmt.Sprintf(claimsLookup, account), nil)
	if err != nil {
		return fmt.Errorf("read back account JWT: %w", err)
	}
	if string(m.Data) != jwt {
		return fmt.Errorf("read back account JWT: the server still holds an older one (an update in the same second is ignored)")
	}
	return nil
}
