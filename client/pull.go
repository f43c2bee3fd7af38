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

// Pull asks a consumer of stream for up to batch messages once; see
// Puller.Pull, which a caller that pulls over and over should use.
func (c *Conn) Pull(ctx context.Context, stream, consumer string, batch int, wait time.Duration, fn func(*nats.Msg) error) (int, error) {
	p, err := c.NewPuller(stream, consumer)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	return p.Pull(ctx, batch, wait, fn)
}

// Puller pulls from one consumer, one pull at a time, through one
// subscription that serves many pulls: a subscription per pull cost the
// server a subscribe and an unsubscribe, and the client a queue, for every
// job an agent took.
//
// Not every pull, though. A pull from another account has the server keep
// a reply path for it (pullReplyWindow, accounts package) until that long
// has passed or its inbox is unsubscribed, about 350 bytes each: one inbox
// for every pull of a busy agent would have the server hold hundreds of
// thousands. So a Puller takes a new inbox after pullsPerInbox pulls.
type Puller struct {
	c                *Conn
	stream, consumer string
	inbox            string
	sub              *nats.Subscription // nil: subscribe before the next pull
	pulls            int                // made through sub
}

// pullsPerInbox is how many pulls a Puller makes through one inbox.
const pullsPerInbox = 64

// NewPuller returns a Puller of a consumer of stream.
func (c *Conn) NewPuller(stream, consumer string) (*Puller, error) {
	p := &Puller{c: c, stream: stream, consumer: consumer}
	if err := p.subscribe(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Puller) subscribe() error {
	p.inbox, p.pulls = p.c.NewInbox(), 0
	sub, err := p.c.SubscribeSync(p.inbox)
	if err != nil {
		return fmt.Errorf("pull from %s: %w", p.consumer, err)
	}
	p.sub = sub
	return nil
}

// Close ends the subscription.
func (p *Puller) Close() {
	if p.sub != nil {
		_ = p.sub.Unsubscribe()
	}
}

// Pull asks the consumer for up to batch messages and hands each to fn as
// it arrives, in order; fn's error ends the pull. It returns how many came,
// when batch came, when the server says there are none for now (after
// waiting up to wait), or on an error.
//
// A pull that ends otherwise may still be open at the server, and the next
// pull subscribes anew. The server delivers to a waiting pull only while
// its inbox has a subscriber, so it then passes the old pull over; on the
// old inbox, the old pull could deliver into a later one (nats.go
// subscribes an inbox again after a reconnect), to a caller that asked for
// fewer and might hold the message past its ack wait.
//
// It is a bare MSG.NEXT request, the one JetStream request that works from
// a credential's own account (it is served by the consumer, in OUTPOST);
// the jetstream package would first ask for the consumer's info, which
// such an account cannot.
func (p *Puller) Pull(ctx context.Context, batch int, wait time.Duration, fn func(*nats.Msg) error) (n int, err error) {
	if p.sub != nil && p.pulls >= pullsPerInbox {
		p.Close()
		p.sub = nil
	}
	if p.sub == nil {
		if err := p.subscribe(); err != nil {
			return 0, err
		}
	}
	p.pulls++
	over := false // the server is done with this pull
	defer func() {
		if !over && n < batch {
			p.Close()
			p.sub = nil
		}
	}()
	c, consumer := p.c, p.consumer
	ctx, stop := c.cancelOnDenial(ctx)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, wait+pullGrace)
	defer cancel()
	req, _ := json.Marshal(struct {
		Batch   int           `json:"batch"`
		Expires time.Duration `json:"expires,omitempty"`
		NoWait  bool          `json:"no_wait,omitempty"`
	}{Batch: batch, Expires: wait, NoWait: wait == 0})
	if err := c.PublishRequest(c.jsAPI+"CONSUMER.MSG.NEXT."+p.stream+"."+consumer, p.inbox, req); err != nil {
		return 0, fmt.Errorf("pull from %s: %w", consumer, err)
	}
	for n < batch {
		m, err := p.sub.NextMsgWithContext(ctx)
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
			over = true
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
