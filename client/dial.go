package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/subjects"
)

// asyncAckTimeout bounds the wait for an async publish's ack.
const asyncAckTimeout = 10 * time.Second

// DefaultURL is where a coordinator started with 'make run' listens.
const DefaultURL = "nats://127.0.0.1:4222"

// DialOptions say where to connect and as whom.
type DialOptions struct {
	// URL of one or more NATS servers, comma separated.
	URL string
	// Creds is the path of the creds file.
	Creds string
	// ConnName names the connection in the server's monitoring.
	ConnName string
	// Reconnect keeps retrying the first connection and every reconnect
	// forever, as a long-running agent wants. A CLI leaves it off and fails
	// fast on an unreachable server.
	Reconnect bool
	// TLS configures TLS: the CA that signed the server's certificate, and a
	// client certificate and key where the server wants mTLS.
	TLS TLS
	// JSDomain is the JetStream domain of the hub when the connection goes
	// through a leaf node, which passes only domain-prefixed JetStream
	// requests ($JS.<domain>.API.…) on to the hub.
	JSDomain string
	// Logger receives connection events; nil means slog.Default.
	Logger *slog.Logger
	// Options are passed to nats.Connect after Outpost's own.
	Options []nats.Option
}

// TLS names the PEM files of a TLS connection; empty fields are unused.
type TLS struct {
	CA, Cert, Key string
}

// Options are the nats.go options that set the TLS up.
func (t TLS) Options() ([]nats.Option, error) {
	var out []nats.Option
	if t.CA != "" {
		out = append(out, nats.RootCAs(t.CA))
	}
	if (t.Cert == "") != (t.Key == "") {
		return nil, errors.New("a TLS client certificate needs both --tls-cert and --tls-key")
	}
	if t.Cert != "" {
		out = append(out, nats.ClientCert(t.Cert, t.Key))
	}
	return out, nil
}

// Conn is a NATS connection that knows whose credential it uses.
type Conn struct {
	*nats.Conn
	JS       jetstream.JetStream
	Identity accounts.Identity

	log   *slog.Logger
	jsAPI string // the JetStream API prefix, with the domain if any

	revoked     chan struct{}
	revokedOnce sync.Once

	live liveMux // Runs' live subscriptions

	mu       sync.Mutex
	denied   error
	onDenial map[int]context.CancelFunc
	nextID   int
}

// Dial connects with the creds file and the caller's private inbox prefix.
// Its errors tell an unreachable server from a refused credential.
func Dial(ctx context.Context, o DialOptions) (*Conn, error) {
	id, _, err := accounts.ReadCreds(o.Creds)
	if err != nil {
		return nil, err
	}
	if o.URL == "" {
		o.URL = DefaultURL
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Conn{Identity: id, revoked: make(chan struct{}), log: log, jsAPI: "$JS.API."}
	if o.JSDomain != "" {
		if err := subjects.ValidTag(o.JSDomain); err != nil {
			return nil, fmt.Errorf("JetStream domain: %w", err)
		}
		c.jsAPI = "$JS." + o.JSDomain + ".API."
	}
	opts := []nats.Option{
		nats.UserCredentials(o.Creds),
		nats.CustomInboxPrefix(subjects.Inbox(id.Name)),
		nats.Name(o.ConnName),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAuthExpired) {
				c.revokedOnce.Do(func() { close(c.revoked) })
			}
			if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
				c.mu.Lock()
				c.denied = err
				for _, cancel := range c.onDenial {
					cancel()
				}
				c.mu.Unlock()
			}
			log.Warn("nats error", "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from nats", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected to nats", "url", nc.ConnectedUrlRedacted()) }),
	}
	if o.Reconnect {
		opts = append(opts, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(time.Second))
	} else {
		opts = append(opts, nats.MaxReconnects(60), nats.ReconnectWait(500*time.Millisecond))
	}
	tlsOpts, err := o.TLS.Options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, tlsOpts...)
	if dl, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(dl)))
	}
	opts = append(opts, o.Options...)
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, dialError(o, err)
	}
	c.Conn = nc
	// An async publish whose message was lost in a dropped connection would
	// otherwise wait for its ack forever; with a timeout it fails, and the
	// agent publishes it again.
	if c.JS, err = jetstream.New(nc, jetstream.WithPublishAsyncTimeout(asyncAckTimeout)); err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return c, nil
}

func dialError(o DialOptions, err error) error {
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked),
		strings.Contains(strings.ToLower(err.Error()), "authorization"):
		return fmt.Errorf("the server at %s refused the credential in %s (revoked, expired, or issued by another operator?): %w", o.URL, o.Creds, err)
	case errors.Is(err, nats.ErrTLS) || strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "x509:") || errors.Is(err, nats.ErrSecureConnRequired):
		return fmt.Errorf("TLS with %s failed (check --tls-ca, and --tls-cert/--tls-key where the server wants a client certificate): %w", o.URL, err)
	case errors.Is(err, nats.ErrNoServers):
		return fmt.Errorf("cannot reach NATS at %s: is the coordinator running ('make run'), or is --server wrong?: %w", o.URL, err)
	}
	return fmt.Errorf("connect to %s: %w", o.URL, err)
}

// Revoked is closed when the server says this connection's credential was
// revoked or has expired: it will never connect again.
func (c *Conn) Revoked() <-chan struct{} { return c.revoked }

// Denied returns the last permission violation the server reported on this
// connection, if any. nats.go reports denials asynchronously (NATS-NOTES
// point 7), so a call that timed out checks here to say why.
func (c *Conn) Denied() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.denied
}

// cancelOnDenial returns a context that ends as soon as the server reports
// a permission violation on this connection, so a denied request fails at
// once instead of waiting out its deadline.
func (c *Conn) cancelOnDenial(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	c.mu.Lock()
	if c.onDenial == nil {
		c.onDenial = map[int]context.CancelFunc{}
	}
	id := c.nextID
	c.nextID++
	c.onDenial[id] = cancel
	c.denied = nil
	c.mu.Unlock()
	return ctx, func() {
		c.mu.Lock()
		delete(c.onDenial, id)
		c.mu.Unlock()
		cancel()
	}
}

// explain turns a timeout that a permission denial caused into the denial.
func (c *Conn) explain(err error) error {
	if err == nil {
		return nil
	}
	if d := c.Denied(); d != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)) {
		return fmt.Errorf("permission denied: %w", d)
	}
	return err
}
