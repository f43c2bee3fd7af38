package testenv

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/subjects"
)

// Timeout bounds every wait of a test: generous, because the suite runs
// under the race detector on a couple of shared cores. Passing tests never
// come near it.
const Timeout = 20 * time.Second

// Env is one embedded server with the Outpost identity, and whatever a test
// started on it. Its zero value is not usable; make one with New.
type Env struct {
	t testing.TB

	// Auth is the identity, in a fresh data directory.
	Auth *accounts.Authority
	// Server is the embedded nats-server, listening on 127.0.0.1.
	Server *coordinator.Server
	// URL is where clients connect.
	URL string
	// Logs holds what the coordinator, the agents and the client
	// connections started here logged; it is printed if the test fails.
	Logs *Logs

	// Coordinator is set once StartCoordinator ran; CoordConn is its
	// connection, with the coordinator's own creds (the whole account).
	Coordinator *coordinator.Coordinator
	CoordConn   *client.Conn
}

// New starts an embedded server in operator mode, with the accounts of a
// fresh authority made in t.TempDir(). Cleanup stops it and everything
// started on it, in the reverse order.
func New(t testing.TB) *Env {
	t.Helper()
	auth, _, err := accounts.Init(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatalf("testenv: init authority: %v", err)
	}
	srv, err := coordinator.StartServer(auth, coordinator.ServerOptions{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("testenv: start server: %v", err)
	}
	e := &Env{t: t, Auth: auth, Server: srv, URL: srv.ClientURL(), Logs: &Logs{}}
	// Whichever server runs at the end, after a RestartServer too.
	t.Cleanup(func() { e.Server.Stop() })
	t.Cleanup(func() {
		if t.Failed() {
			e.Logs.Dump(t)
		}
	})
	return e
}

// RestartServer stops the embedded server and starts it again on the same
// address and data, as after a crash or an upgrade: clients reconnect,
// streams and consumers are kept, and what the server held only in memory
// (pull requests waiting for a message) is gone.
func (e *Env) RestartServer() {
	e.t.Helper()
	addr := e.Server.Addr().String()
	e.Server.Stop()
	srv, err := coordinator.StartServer(e.Auth, coordinator.ServerOptions{Listen: addr})
	if err != nil {
		e.t.Fatalf("testenv: restart server on %s: %v", addr, err)
	}
	e.Server = srv
}

// Context returns a context that ends after Timeout or with the test.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Creds issues a credential for role, name and tags, writes its creds file
// (mode 0600, in the data directory) and returns the file's path. With a
// coordinator running the credential is issued through it, so the API knows
// the name and an agent's tag consumers exist; without one it is only
// signed. The coordinator role's creds are made once and reused.
func (e *Env) Creds(role accounts.Role, name string, tags ...string) string {
	e.t.Helper()
	req := accounts.Request{Name: name, Role: role, Tags: tags}
	if role == accounts.RoleCoordinator {
		p, err := e.Auth.EnsureCreds(req)
		if err != nil {
			e.t.Fatalf("testenv: coordinator creds: %v", err)
		}
		return p
	}
	var (
		cred accounts.Credential
		err  error
	)
	if e.Coordinator != nil {
		cred, err = e.Coordinator.Issue(Context(e.t), req)
	} else {
		cred, err = e.Auth.Issue(req)
	}
	if err != nil {
		e.t.Fatalf("testenv: issue %s %s: %v", role, name, err)
	}
	p, err := e.Auth.SaveCreds(name, cred.Creds)
	if err != nil {
		e.t.Fatalf("testenv: save creds %s: %v", name, err)
	}
	return p
}

// Dial connects with client.Dial and the creds file at path. The
// connection is closed by Cleanup.
func (e *Env) Dial(creds string, opts ...nats.Option) *client.Conn {
	e.t.Helper()
	c, err := client.Dial(Context(e.t), client.DialOptions{
		URL: e.URL, Creds: creds, ConnName: filepath.Base(creds), Logger: e.Logs.Logger(), Options: opts,
	})
	if err != nil {
		e.t.Fatalf("testenv: dial with %s: %v", creds, err)
	}
	e.t.Cleanup(c.Close)
	return c
}

// NATS connects a plain nats.go connection with the creds file at path and
// its holder's private inbox prefix, as a third-party client would. Options
// come after those. The connection is closed by Cleanup.
func (e *Env) NATS(creds string, opts ...nats.Option) *nats.Conn {
	e.t.Helper()
	id, _, err := accounts.ReadCreds(creds)
	if err != nil {
		e.t.Fatalf("testenv: %v", err)
	}
	all := append([]nats.Option{
		nats.UserCredentials(creds),
		nats.CustomInboxPrefix(subjects.Inbox(id.Name)),
		nats.NoReconnect(),
		nats.Timeout(Timeout),
	}, opts...)
	nc, err := nats.Connect(e.URL, all...)
	if err != nil {
		e.t.Fatalf("testenv: connect with %s: %v", creds, err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// StartCoordinator sets up the streams (coordinator.New) and runs a
// coordinator until the test ends. The zero Limits mean
// coordinator.DefaultLimits. It returns once the coordinator answers.
func (e *Env) StartCoordinator(limits coordinator.Limits) *coordinator.Coordinator {
	e.t.Helper()
	return e.StartCoordinatorWith(coordinator.Config{Limits: limits})
}

// StartCoordinatorWith is StartCoordinator with more of the config: its
// Auth, Conn, Sys and Logger are filled in.
func (e *Env) StartCoordinatorWith(cfg coordinator.Config) *coordinator.Coordinator {
	e.t.Helper()
	conn := e.Dial(e.Creds(accounts.RoleCoordinator, subjects.CoordinatorName))
	sys, err := coordinator.DialSys(e.Auth, e.URL)
	if err != nil {
		e.t.Fatalf("testenv: system account: %v", err)
	}
	e.t.Cleanup(sys.Close)
	cfg.Auth, cfg.Conn, cfg.Sys = e.Auth, conn, sys
	cfg.Logger = e.Logs.Logger().With("part", "coordinator")
	co, err := coordinator.New(Context(e.t), cfg)
	if err != nil {
		e.t.Fatalf("testenv: coordinator: %v", err)
	}
	mark := e.Logs.Len()
	e.run("coordinator", co.Run)
	e.Logs.Wait(e.t, mark, "the coordinator to be ready", func(en Entry) bool {
		return en.Msg == "coordinator ready"
	})
	e.Coordinator, e.CoordConn = co, conn
	return co
}

// StartAgent runs an agent with the creds file at path until the test
// ends. cfg.Conn is filled in unless given (a connection through a Proxy,
// say); an empty WorkDir becomes a directory of the
// test's own, and a nil Logger the Env's Logs. It returns once the agent
// listens for stop requests.
func (e *Env) StartAgent(creds string, cfg agent.Config) *agent.Agent {
	e.t.Helper()
	if cfg.Conn == nil {
		cfg.Conn = e.Dial(creds)
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = e.t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = e.Logs.Logger().With("part", "agent")
	}
	a, err := agent.New(cfg)
	if err != nil {
		e.t.Fatalf("testenv: agent: %v", err)
	}
	name := cfg.Conn.Identity.Name
	mark := e.Logs.Len()
	e.run("agent "+name, func(ctx context.Context) error {
		// A revoked agent ends by itself; tests that revoke expect it.
		if err := a.Run(ctx); !errors.Is(err, agent.ErrRevoked) {
			return err
		}
		return nil
	})
	e.Logs.Wait(e.t, mark, "agent "+name+" to be ready", func(en Entry) bool {
		return en.Msg == "agent ready" && en.Attrs["agent"] == name
	})
	// The stop subscriptions are made before "agent ready"; make sure the
	// server has them before a test sends a stop.
	if err := cfg.Conn.FlushTimeout(Timeout); err != nil {
		e.t.Fatalf("testenv: flush agent connection: %v", err)
	}
	return a
}

// run runs fn until Cleanup cancels its context, and waits for it to
// return.
func (e *Env) run(what string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("testenv: %s: %v", what, err)
			}
		case <-time.After(Timeout):
			e.t.Errorf("testenv: %s did not stop within %s", what, Timeout)
		}
	})
}

// Eventually waits until cond holds, checking it every few milliseconds,
// and fails the test if it does not within Timeout.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, Timeout, what, cond)
}

// EventuallyWithin is Eventually with a deadline of its own.
func EventuallyWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Get fetches url and returns its body, failing the test on any error.
func Get(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FilesHolding lists the files under root whose bytes contain s: how a
// test shows a value was never stored in the clear.
func FilesHolding(t testing.TB, root, s string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			return nil // a file removed meanwhile
		}
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(s)) {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("testenv: scan %s: %v", root, err)
	}
	return found
}
