package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/subjects"
)

// Config is what a coordinator needs once it is connected.
type Config struct {
	// Auth signs credentials and account updates.
	Auth *accounts.Authority
	// Conn is the coordinator's own connection, with the coordinator creds.
	Conn *client.Conn
	// Sys is a system-account connection (see accounts.SysUser), through
	// which revocations are pushed to the servers and connections are seen.
	// Without it the coordinator cannot revoke.
	Sys *nats.Conn
	// Metrics receives the coordinator's metrics; nil keeps them private.
	Metrics prometheus.Registerer
	// Limits are the stream limits; the zero value means DefaultLimits.
	Limits Limits
	// LostCheck is how often running jobs are checked against the agents'
	// heartbeats, to requeue those no agent runs any more; zero means 5s.
	LostCheck time.Duration
	// Logger; nil means slog.Default.
	Logger *slog.Logger
}

// Coordinator answers the API and keeps job records. Create it with New
// and run it with Run.
type Coordinator struct {
	auth      *accounts.Authority
	conn      *client.Conn
	sys       *nats.Conn
	js        jetstream.JetStream
	limits    Limits
	lostCheck time.Duration
	log       *slog.Logger
	jobs      records
	creds     registry
	tags      sync.Map     // tag -> struct{}: tags whose consumer is known to exist
	timed     atomic.Int64 // queued jobs with a queue timeout, as far as known
	m         *metrics
	fleet     *fleet
	// jobsStream is kept to take finished or stopped jobs off the queue.
	jobsStream jetstream.Stream
	// left are the jobs that ended lately, whose requests are looked for.
	left leftovers
}

// New sets up the streams, buckets and consumers (idempotently) and returns
// a coordinator ready to Run.
func New(ctx context.Context, cfg Config) (*Coordinator, error) {
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LostCheck <= 0 {
		cfg.LostCheck = 5 * time.Second
	}
	c := &Coordinator{auth: cfg.Auth, conn: cfg.Conn, sys: cfg.Sys, js: cfg.Conn.JS, limits: cfg.Limits, lostCheck: cfg.LostCheck, log: cfg.Logger}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	c.m, c.fleet = newMetrics(cfg.Metrics), newFleet(cfg.Metrics, silentAfter(c.limits.AckWait))
	c.timed.Store(1) // unknown until the first sweep
	cfg.Metrics.MustRegister(newQueueCollector(c.js, &c.tags))
	if err := c.publishAccounts(ctx); err != nil {
		return nil, err
	}
	// A cluster that has just come up may not have placed the account's
	// JetStream yet, and the buckets' streams, just made, answer once they
	// have leaders: wait for both (within ctx) rather than fail.
	var jobs, creds jetstream.KeyValue
	err := whileStarting(ctx, setupRetry, func() (err error) {
		if jobs, creds, err = ensureStreams(ctx, c.js, c.limits); setupRetry(err) {
			c.log.Info("waiting for JetStream", "err", err)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("set up streams: %w", err)
	}
	for _, kv := range []jetstream.KeyValue{jobs, creds} {
		_ = whileStarting(ctx, jetStreamStarting, func() error {
			_, err := kv.Get(ctx, "ready")
			return err
		})
	}
	c.jobs, c.creds = records{kv: jobs, js: c.js, m: c.m, live: newActive(), recent: newRecent()}, registry{creds, c.js, &known{m: map[string]subjects.Credential{}}}
	if c.jobsStream, err = c.js.Stream(ctx, subjects.JobsStream); err != nil {
		return nil, fmt.Errorf("stream %s: %w", subjects.JobsStream, err)
	}
	all, err := c.creds.all(ctx)
	if err != nil {
		return nil, err
	}
	for _, cr := range all {
		if cr.Role == string(accounts.RoleAgent) && cr.RevokedAt == nil {
			if err := c.ensureTags(ctx, cr.Tags); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// jetStreamStarting reports whether err says JetStream is not there yet,
// as it says for a moment while a cluster forms.
func jetStreamStarting(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrNoResponders) || (errors.As(err, &apiErr) && apiErr.Code == 503)
}

// whileStarting calls try until it returns an error that starting does
// not call temporary, or ctx ends, and returns try's last error.
func whileStarting(ctx context.Context, starting func(error) bool, try func() error) error {
	for {
		err := try()
		if !starting(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// setupRetry reports whether setting up the streams may work on a second
// try: besides JetStream not being there yet, a cluster that has just
// formed can fail to place a new stream on a member for a moment.
func setupRetry(err error) bool {
	var apiErr *jetstream.APIError
	return jetStreamStarting(err) || (errors.As(err, &apiErr) && apiErr.Code >= 500)
}

// publishAccounts pushes every credential account the data directory
// holds to the servers. An embedded server reads them from there itself,
// but a stock server or cluster that the coordinator attaches to learns of
// accounts made offline ('coordinator init') only this way.
func (c *Coordinator) publishAccounts(ctx context.Context) error {
	if c.sys == nil {
		return nil
	}
	accts, err := c.auth.CredentialAccounts()
	if err != nil {
		return err
	}
	accts[c.auth.WorkPublicKey()] = c.auth.AccountJWTs()[c.auth.WorkPublicKey()]
	for pub, tok := range accts {
		if err := pushAccount(ctx, c.sys, pub, tok); err != nil {
			return fmt.Errorf("account %s: %w", pub, err)
		}
	}
	return nil
}

func (c *Coordinator) ensureTags(ctx context.Context, tags []string) error {
	for _, t := range tags {
		if err := ensureTagConsumer(ctx, c.js, t, c.limits); err != nil {
			return err
		}
		c.tags.Store(t, struct{}{})
	}
	return nil
}

// Issue signs a new credential, registers it, and creates the consumers of
// an agent's tags. The returned credential holds the only copy of the seed.
func (c *Coordinator) Issue(ctx context.Context, req accounts.Request) (accounts.Credential, error) {
	if err := req.Validate(); err != nil {
		return accounts.Credential{}, err
	}
	if old, err := c.creds.get(ctx, req.Name); err == nil && old.RevokedAt == nil {
		return accounts.Credential{}, fmt.Errorf("%w: %s (pick another name, or revoke it first)", errNameTaken, req.Name)
	}
	cred, err := c.auth.Issue(req)
	if err != nil {
		return accounts.Credential{}, err
	}
	// An embedded server finds the new account in the data directory; any
	// other server learns of it here.
	if c.sys != nil {
		if err := pushAccount(ctx, c.sys, cred.Account, cred.AccountJWT); err != nil {
			return accounts.Credential{}, err
		}
	}
	if req.Role == accounts.RoleAgent {
		if err := c.ensureTags(ctx, cred.Tags); err != nil {
			return accounts.Credential{}, err
		}
	}
	if err := c.creds.add(ctx, cred.Credential); err != nil {
		return accounts.Credential{}, err
	}
	c.m.issued.WithLabelValues(string(req.Role)).Inc()
	c.log.Info("credential issued", "name", cred.Name, "role", cred.Role, "tags", cred.Tags, "public_key", cred.PublicKey)
	return cred, nil
}

// Register records a credential that the data directory holds as a creds
// file (written by 'coordinator init'), so the API knows its holder. It is
// a no-op for a name already registered.
func (c *Coordinator) Register(ctx context.Context, credsPath string) error {
	id, _, err := accounts.ReadCreds(credsPath)
	if err != nil {
		return err
	}
	if _, err := c.creds.get(ctx, id.Name); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	if id.Role == accounts.RoleAgent {
		if err := c.ensureTags(ctx, id.Tags); err != nil {
			return err
		}
	}
	if err := c.creds.add(ctx, id.Record()); err != nil && !errors.Is(err, errNameTaken) {
		return err
	}
	return nil
}

// Run answers API requests and folds status events into records until ctx
// ends.
func (c *Coordinator) Run(ctx context.Context) error {
	api, err := c.serveAPI(ctx)
	if err != nil {
		return err
	}
	defer api.Drain()
	fatal := make(chan error, 1)
	stopEvents, err := c.consumeEvents(ctx, fatal)
	if err != nil {
		return err
	}
	defer stopEvents()
	if err := c.creds.watch(ctx); err != nil {
		return err
	}
	stopPresence, err := c.watchPresence(ctx)
	if err != nil {
		return err
	}
	defer stopPresence()
	beats, err := c.conn.Subscribe(subjects.HeartbeatAll, c.fleet.beat)
	if err != nil {
		return fmt.Errorf("subscribe to heartbeats: %w", err)
	}
	defer beats.Unsubscribe()
	swept := make(chan struct{})
	go func() { defer close(swept); c.sweep(ctx) }()
	defer func() { <-swept }()
	watched := make(chan struct{})
	go func() { defer close(watched); c.watchLost(ctx, c.lostCheck) }()
	defer func() { <-watched }()
	cleared := make(chan struct{})
	go func() { defer close(cleared); c.clearLeftovers(ctx) }()
	defer func() { <-cleared }()
	c.log.Info("coordinator ready", "api", subjects.APIAll)
	select {
	case <-ctx.Done():
		return nil
	case err := <-fatal:
		c.log.Error("coordinator stopping", "err", err)
		return err
	}
}
