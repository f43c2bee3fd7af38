package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/outpost-run/outpost/accounts"
)

// ServerOptions are the knobs of the embedded server.
type ServerOptions struct {
	// Listen is host:port for client connections; port 0 picks a free one.
	Listen string
	// TLS, when its server certificate is set, requires TLS of clients;
	// with Verify they must present a certificate signed by TLS.CA too.
	TLS    accounts.TLSFiles
	Verify bool
	// Logger receives the server's own log lines; nil keeps it quiet.
	Logger *slog.Logger
}

// Server is an embedded nats-server running the configuration that
// 'coordinator init' writes, so the embedded and the stock server behave
// the same.
type Server struct {
	*server.Server
}

// StartServer writes the server configuration for auth (if it changed) and
// starts a server from it, waiting until it accepts connections.
func StartServer(auth *accounts.Authority, o ServerOptions) (*Server, error) {
	host, port, err := ParseListen(o.Listen)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else if err := portFree(o.Listen); err != nil {
		return nil, err
	}
	if o.Verify && o.TLS.CA == "" {
		return nil, fmt.Errorf("client certificate verification needs a CA (--tls-ca)")
	}
	conf, err := auth.WriteServerConfig(accounts.ServerConfig{Host: host, Port: port, TLS: o.TLS, Verify: o.Verify})
	if err != nil {
		return nil, err
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		return nil, fmt.Errorf("read server config %s: %w", conf, err)
	}
	opts.NoSigs = true
	opts.NoLog = o.Logger == nil
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	if o.Logger != nil {
		s.SetLoggerV2(slogAdapter{o.Logger.With("part", "nats-server")}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded server did not start listening on %s (is the port in use? pick another with --listen)", o.Listen)
	}
	return &Server{s}, nil
}

// Stop shuts the server down and waits for it.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// Wait blocks until the server has shut down or ctx ends.
func (s *Server) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.WaitForShutdown(); close(done) }()
	select {
	case <-done:
		return fmt.Errorf("embedded server shut down")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ParseListen splits a host:port listen address.
func ParseListen(l string) (string, int, error) {
	host, p, err := net.SplitHostPort(l)
	if err != nil {
		return "", 0, fmt.Errorf("listen address %q: want host:port, such as 127.0.0.1:4222: %w", l, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("listen address %q: port must be a number from 0 to 65535", l)
	}
	return host, port, nil
}

// slogAdapter lets the server log through slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(f string, v ...any) { a.l.Info(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Warnf(f string, v ...any)   { a.l.Warn(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Fatalf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Errorf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Debugf(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Tracef(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }

// portFree fails at once on an address in use, which the server itself
// would only log while its caller waited for it to become ready.
func portFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s (is another coordinator or nats-server running? pick another address with --listen): %w", addr, err)
	}
	return l.Close()
}
