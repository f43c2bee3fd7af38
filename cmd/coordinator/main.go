// Command coordinator runs Outpost's coordinator: by default with an
// embedded NATS server, or attached to an existing deployment.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/connflags"
	"github.com/outpost-run/outpost/subjects"
)

const (
	defaultData   = ".outpost"
	defaultListen = "127.0.0.1:4222"
	adminName     = "admin"
	localAgent    = "local-agent"
	localTag      = "local"
)

func main() {
	if err := root().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "coordinator:", err)
		os.Exit(1)
	}
}

func root() *cobra.Command {
	cmd := &cobra.Command{
		Use:           "coordinator",
		Short:         "Outpost's coordinator: job records, API, and (by default) an embedded NATS server",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.AddCommand(initCmd(), runCmd())
	return cmd
}

// bootstrapCreds are the credentials every data directory starts with.
func bootstrapCreds() []accounts.Request {
	return []accounts.Request{
		{Name: subjects.CoordinatorName, Role: accounts.RoleCoordinator},
		{Name: adminName, Role: accounts.RoleAdmin},
		{Name: localAgent, Role: accounts.RoleAgent, Tags: []string{localTag}},
	}
}

// initialise creates the identity in data (or loads it) and the bootstrap
// creds files, and writes the server configuration.
func initialise(data, listen string) (*accounts.Authority, bool, error) {
	// A bad flag must not leave a data directory behind.
	if _, _, err := coordinator.ParseListen(listen); err != nil {
		return nil, false, err
	}
	auth, created, err := accounts.Init(data)
	if err != nil {
		return nil, false, fmt.Errorf("initialise %s: %w", data, err)
	}
	for _, req := range bootstrapCreds() {
		if _, err := auth.EnsureCreds(req); err != nil {
			return nil, false, err
		}
	}
	return auth, created, nil
}

func initCmd() *cobra.Command {
	var (
		data, listen string
		withTLS      bool
		tlsHosts     []string
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the operator, accounts, role keys and bootstrap creds, and a nats-server config",
		Long: `init creates, in --data, the NATS operator, the SYS and OUTPOST accounts, one
signing key per role, creds files for the coordinator, an admin and a local
agent, and nats-server.conf, with which a stock nats-server runs Outpost:

  nats-server -c DATA/nats-server.conf
  coordinator run --nats-url nats://HOST:PORT --data DATA

Running it again changes nothing that exists.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			auth, created, err := initialise(data, listen)
			if err != nil {
				return err
			}
			host, port, err := coordinator.ParseListen(listen)
			if err != nil {
				return err
			}
			sc := accounts.ServerConfig{Host: host, Port: port}
			if withTLS {
				if sc.TLS, err = auth.EnsureTLS(append(tlsHosts, host)); err != nil {
					return err
				}
				sc.Verify = true
			}
			conf, err := auth.WriteServerConfig(sc)
			if err != nil {
				return err
			}
			verb := "Loaded"
			if created {
				verb = "Created"
			}
			fmt.Printf("%s Outpost identity in %s\n  server config: %s\n  admin creds:   %s\n  agent creds:   %s (tag %s)\n\nStart a stock server and attach the coordinator:\n  nats-server -c %s\n  coordinator run --data %s --nats-url nats://%s\n",
				verb, auth.Dir(), conf, auth.CredsPath(adminName), auth.CredsPath(localAgent), localTag, conf, data, listen)
			if withTLS {
				t := auth.TLSFiles()
				fmt.Printf("\nThe server wants TLS 1.2+ and a client certificate (mTLS). Clients pass:\n  --tls-ca %s --tls-cert %s --tls-key %s\n", t.CA, t.ClientCert, t.ClientKey)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", defaultData, "data directory for keys, creds, JWTs and (embedded) streams")
	cmd.Flags().StringVar(&listen, "listen", defaultListen, "host:port the server config listens on")
	cmd.Flags().BoolVar(&withTLS, "tls", false, "generate a small ECDSA P-256 CA, server and client certificates in DATA/tls and require mTLS")
	cmd.Flags().StringSliceVar(&tlsHosts, "tls-host", nil, "extra host names or addresses for the server certificate")
	return cmd
}

type runOptions struct {
	data, listen, natsURL, creds string
	tls                          client.TLS
	generatedTLS                 bool
	localAgent                   bool
	concurrency                  int
	ackWait                      time.Duration
	replicas                     int
	httpAddr                     string
	verbose                      bool
}

func runCmd() *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the coordinator (embedded NATS server unless --nats-url is given)",
		Long: `run starts the coordinator. Without --nats-url it embeds a NATS server
(JetStream, operator mode) listening on --listen, with its data in --data,
initialising both on first start. With --nats-url it attaches to a server
started with the config 'coordinator init' wrote, using the coordinator creds
in --data (or --creds).

Unless --local-agent=false, an agent for tag 'local' runs in the same process.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runCoordinator(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.data, "data", defaultData, "data directory")
	f.StringVar(&o.listen, "listen", defaultListen, "host:port of the embedded server (port 0 picks a free one)")
	f.StringVar(&o.natsURL, "nats-url", "", "attach to this NATS server instead of embedding one")
	f.StringVar(&o.creds, "creds", "", "coordinator creds when attaching (default DATA/creds/coordinator.creds)")
	connflags.BindTLS(f, &o.tls, "embedded: the server's certificate; attached: the coordinator's client certificate")
	f.BoolVar(&o.generatedTLS, "tls", false, "embedded: require mTLS with the certificates 'coordinator init --tls' made in DATA/tls")
	f.BoolVar(&o.localAgent, "local-agent", true, "run an agent for tag 'local' in this process")
	f.IntVar(&o.concurrency, "agent-concurrency", 4, "jobs the local agent runs at once")
	f.DurationVar(&o.ackWait, "ack-wait", coordinator.DefaultLimits.AckWait, "how long a silent agent keeps its job before another agent gets it")
	f.IntVar(&o.replicas, "replicas", 1, "replicas of every stream and bucket: 3 on a three-node cluster (deploy/nats/cluster.conf)")
	f.StringVar(&o.httpAddr, "http", "127.0.0.1:9190", "address of /metrics, /healthz and /readyz (empty: none)")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "debug logging")
	return cmd
}

func runCoordinator(ctx context.Context, o runOptions) error {
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var (
		auth *accounts.Authority
		err  error
	)
	if o.natsURL == "" {
		auth, _, err = initialise(o.data, o.listen)
	} else {
		// Attached, the identity must be the one the server was started
		// with: a fresh one would only be refused by it.
		auth, err = accounts.Open(o.data)
	}
	if err != nil {
		return err
	}
	var g run.Group
	dial := client.DialOptions{URL: o.natsURL, Creds: o.creds, Reconnect: true, Logger: log, TLS: o.tls}
	if dial.Creds == "" {
		dial.Creds = auth.CredsPath(subjects.CoordinatorName)
	}
	embedded := o.natsURL == ""
	var srv *coordinator.Server
	if embedded {
		so := coordinator.ServerOptions{Listen: o.listen, Logger: log,
			TLS: accounts.TLSFiles{CA: o.tls.CA, ServerCert: o.tls.Cert, ServerKey: o.tls.Key}, Verify: o.tls.CA != ""}
		if o.generatedTLS {
			if so.TLS, err = auth.EnsureTLS(nil); err != nil {
				return err
			}
			so.Verify = true
		} else if _, err := os.Stat(auth.TLSFiles().ServerCert); err == nil && so.TLS.ServerCert == "" {
			// Starting without TLS would quietly drop what 'init --tls' set up.
			return fmt.Errorf("%s was initialised with --tls: run with --tls (or --tls-cert/--tls-key), or remove %s to run without TLS", o.data, filepath.Dir(auth.TLSFiles().ServerCert))
		}
		srv, err = coordinator.StartServer(auth, so)
		if err != nil {
			return err
		}
		// In-process connections need no TLS: the server lets them in
		// without it. The server's own URL says tls:// when it has a
		// certificate, which would make nats.go insist on TLS over the
		// pipe, and fail for want of the CA.
		dial.TLS = client.TLS{}
		defer srv.Stop()
		dial.URL = strings.Replace(srv.ClientURL(), "tls://", "nats://", 1)
		dial.Options = []nats.Option{nats.InProcessServer(srv)}
		sctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return srv.Wait(sctx) }, func(error) { cancel() })
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := client.Dial(dctx, withName(dial, "outpost-coordinator"))
	if err != nil {
		return err
	}
	defer conn.Close()
	tlsOpts, err := dial.TLS.Options()
	if err != nil {
		return err
	}
	sys, err := coordinator.DialSys(auth, dial.URL, append(tlsOpts, dial.Options...)...)
	if err != nil {
		return err
	}
	defer sys.Close()
	limits := coordinator.DefaultLimits
	limits.AckWait = o.ackWait
	limits.Replicas = o.replicas
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	co, err := coordinator.New(dctx, coordinator.Config{Auth: auth, Conn: conn, Sys: sys, Limits: limits, Metrics: reg, Logger: log})
	if err != nil {
		return err
	}
	if o.httpAddr != "" {
		l, err := net.Listen("tcp", o.httpAddr)
		if err != nil {
			return fmt.Errorf("--http %s: %w (pick another address, or --http '' for none)", o.httpAddr, err)
		}
		hs := &http.Server{Handler: co.Handler(reg), ReadHeaderTimeout: 5 * time.Second}
		g.Add(func() error {
			if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) { _ = hs.Close() })
		log.Info("serving metrics and health", "addr", "http://"+l.Addr().String())
	}
	// Every creds file in the data directory is registered: the bootstrap
	// ones, and any an operator issued offline with accounts.EnsureCreds.
	files, err := auth.CredsFiles()
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := co.Register(dctx, f); err != nil {
			return fmt.Errorf("register %s: %w", f, err)
		}
	}
	cctx, ccancel := context.WithCancel(context.Background())
	g.Add(func() error { return co.Run(cctx) }, func(error) { ccancel() })

	if o.localAgent {
		ad := dial
		ad.Creds = auth.CredsPath(localAgent)
		aconn, err := client.Dial(dctx, withName(ad, "outpost-local-agent"))
		if err != nil {
			return err
		}
		defer aconn.Close()
		ag, err := agent.New(agent.Config{Conn: aconn, Concurrency: o.concurrency,
			WorkDir: filepath.Join(auth.Dir(), "work"), Logger: log})
		if err != nil {
			return err
		}
		actx, acancel := context.WithCancel(context.Background())
		g.Add(func() error { return ag.Run(actx) }, func(error) { acancel() })
	}
	g.Add(run.SignalHandler(context.Background(), os.Interrupt, syscall.SIGTERM))

	where := "embedded, listening on " + dial.URL
	if !embedded {
		where = "attached to " + o.natsURL
	}
	fmt.Printf("Outpost coordinator is running (NATS %s; data in %s)\n  admin creds: %s\n", where, auth.Dir(), auth.CredsPath(adminName))
	if o.localAgent {
		fmt.Printf("  local agent: tag %q, creds %s\n", localTag, auth.CredsPath(localAgent))
	}
	fmt.Printf("\nNext, in another terminal:\n  bin/outpost run --tag %s -- sh -c 'echo hello from outpost'\n\n", localTag)
	err = g.Run()
	var sig run.SignalError
	if errors.As(err, &sig) {
		log.Info("shutting down", "signal", sig.Signal)
		return nil
	}
	return err
}

func withName(o client.DialOptions, name string) client.DialOptions {
	o.ConnName = name
	return o
}
