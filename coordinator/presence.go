package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/subjects"
)

// connEvent is the part of the server's connect and disconnect events the
// coordinator reads.
type connEvent struct {
	Time   time.Time `json:"timestamp"`
	Client struct {
		User string `json:"user"`
		JWT  string `json:"jwt"`
	} `json:"client"`
}

// watchPresence records when each credential was last seen connecting or
// disconnecting, from the server's own events in the system account, so it
// covers every role without any help from clients.
func (c *Coordinator) watchPresence(ctx context.Context) (func(), error) {
	if c.sys == nil {
		return func() {}, nil
	}
	var subs []*nats.Subscription
	stop := func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	for _, kind := range []string{"CONNECT", "DISCONNECT"} {
		// Every credential has an account of its own; the key check below
		// ties each event to the credential.
		s, err := c.sys.Subscribe(fmt.Sprintf("$SYS.ACCOUNT.*.%s", kind), func(m *nats.Msg) {
			// The server sends these on the system account only, so the user
			// JWT inside is the one it accepted.
			var ev connEvent
			if json.Unmarshal(m.Data, &ev) != nil {
				return
			}
			uc, err := jwt.DecodeUserClaims(ev.Client.JWT)
			if err != nil || subjects.ValidName(uc.Name) != nil {
				return
			}
			at := ev.Time.UTC()
			if at.IsZero() {
				at = time.Now().UTC()
			}
			_, err = c.creds.update(ctx, uc.Name, func(cr *subjects.Credential) error {
				if cr.PublicKey != ev.Client.User {
					return errStale
				}
				cr.LastSeen = &at
				return nil
			})
			if err != nil && !errors.Is(err, errStale) {
				c.log.Debug("last seen not recorded", "name", uc.Name, "err", err)
			}
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("watch connections: %w", err)
		}
		subs = append(subs, s)
	}
	return stop, nil
}

var errStale = errors.New("event of an older key")
