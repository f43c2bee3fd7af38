package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrConsumerGone is returned by Pull when the server says the consumer
// does not exist (any more).
var ErrConsumerGone = errors.New("consumer gone")

// The headers in which nats.go hands over the status line of a message the
// server itself sends (404 No Messages, 408 Request Timeout, and so on).
const (
	statusHdr = "Status"
	descrHdr  = "Description"
)

// pullGrace is how long past its expiry a pull waits for the server's word.
const pullGrace = 5 * time.Second

// Pull asks a consumer of stream for up to batch messages and hands each
// to fn as it arrives, in order; fn's error ends the pull. It returns how
// many came, when batch came, when the server says there are none for now
// (after waiting up to wait), or on an error.
//
// It is a bare MSG.NEXT request, the one JetStream request that works from
// a credential's own account (it is served by the consumer, in OUTPOST);
// the jetstream package would first ask for the consumer's info, which
// such an account cannot.
func (c *Conn) Pull(ctx context.Context, stream, consumer string, batch int, wait time.Duration, fn func(*nats.Msg) error) (int, error) {
	ctx, stop := c.cancelOnDenial(ctx)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, wait+pullGrace)
	defer cancel()
	inbox := c.NewInbox()
	sub, err := c.SubscribeSync(inbox)
	if err != nil {
		return 0, fmt.Errorf("pull from %s: %w", consumer, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, _ := json.Marshal(struct {
		Batch   int           `json:"batch"`
		Expires time.Duration `json:"expires,omitempty"`
		NoWait  bool          `json:"no_wait,omitempty"`
	}{Batch: batch, Expires: wait, NoWait: wait == 0})
	if err := c.PublishRequest(c.jsAPI+"CONSUMER.MSG.NEXT."+stream+"."+consumer, inbox, req); err != nil {
		return 0, fmt.Errorf("pull from %s: %w", consumer, err)
	}
	n := 0
	for n < batch {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if errors.Is(err, nats.ErrNoResponders) {
				return n, fmt.Errorf("pull from %s: %w", consumer, ErrConsumerGone)
			}
			if errors.Is(err, context.DeadlineExceeded) && c.Denied() == nil {
				return n, fmt.Errorf("pull from %s: no answer from the server (is the consumer there?)", consumer)
			}
			return n, fmt.Errorf("pull from %s: %w", consumer, c.explain(err))
		}
		switch status := m.Header.Get(statusHdr); status {
		case "":
			n++
			if err := fn(m); err != nil {
				return n, err
			}
		case "100": // an idle heartbeat
		case "404", "408": // none for now; the wait is over
			return n, nil
		case "503":
			return n, fmt.Errorf("pull from %s: %w (no responders: the coordinator makes it)", consumer, ErrConsumerGone)
		default:
			desc := m.Header.Get(descrHdr)
			if status == "409" && desc == "Consumer Deleted" {
				return n, fmt.Errorf("pull from %s: %w", consumer, ErrConsumerGone)
			}
			return n, fmt.Errorf("pull from %s: the server said %s %s", consumer, status, desc)
		}
	}
	return n, nil
}
