package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-run/outpost/accounts"
)

// TestTLS runs Outpost with the certificates 'coordinator init --tls'
// makes, on the embedded server and on a stock nats-server: clients with
// the CA and the client certificate get in and run a job; a client without
// its certificate, without the CA, or without TLS at all is refused, and
// so is TLS 1.1.
func TestTLS(t *testing.T) {
	t.Parallel()

	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		data := filepath.Join(t.TempDir(), "data")
		listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
		r := runCmd(t, filepath.Dir(data), baseEnv(), bin("coordinator"), "init", "--tls", "--data", data, "--listen", listen)
		if r.code != 0 || !strings.Contains(r.stdout, "--tls-ca "+filepath.Join(data, "tls", "ca.pem")) {
			t.Fatalf("coordinator init --tls:\n%s", r)
		}
		files := tlsFiles(t, data)
		// Without --tls the coordinator refuses, rather than run a server
		// that quietly dropped TLS.
		r = runCmd(t, filepath.Dir(data), baseEnv(), bin("coordinator"), "run", "--data", data, "--listen", "127.0.0.1:0", "--http", "")
		if r.code == 0 || !strings.Contains(r.stderr, "was initialised with --tls: run with --tls") {
			t.Errorf("coordinator run without --tls on a --tls data directory:\n%s", r)
		}
		// Port 0 rather than the port init was given: parallel tests never
		// race for it, and the embedded server rewrites the configuration.
		c := startCoordinator(t, coordOptions{data: data, args: []string{"--tls"}, clientEnv: files.env()})
		checkTLS(t, c, files)
	})

	t.Run("stock nats-server", func(t *testing.T) {
		requireNATSTools(t)
		t.Parallel()
		data := filepath.Join(t.TempDir(), "data")
		plain := startStockServer(t, data, "--tls")
		files := tlsFiles(t, data)
		natsURL := strings.Replace(plain, "nats://", "tls://", 1)
		c := startCoordinator(t, coordOptions{data: data, natsURL: natsURL,
			args:      []string{"--tls-ca", files.CA, "--tls-cert", files.ClientCert, "--tls-key", files.ClientKey},
			clientEnv: files.env()})
		checkTLS(t, c, files)
	})
}

type tlsSetup struct{ accounts.TLSFiles }

// tlsFiles are the files 'coordinator init --tls' wrote into data.
func tlsFiles(t *testing.T, data string) tlsSetup {
	t.Helper()
	a, err := accounts.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	f := a.TLSFiles()
	for _, p := range []string{f.CA, f.ClientCert, f.ClientKey, f.ServerCert, f.ServerKey} {
		if !fileExists(p) {
			t.Fatalf("coordinator init --tls wrote no %s", p)
		}
	}
	return tlsSetup{f}
}

func (f tlsSetup) env() []string {
	return []string{"OUTPOST_TLS_CA=" + f.CA, "OUTPOST_TLS_CERT=" + f.ClientCert, "OUTPOST_TLS_KEY=" + f.ClientKey}
}

func checkTLS(t *testing.T, c *coord, f tlsSetup) {
	t.Helper()
	// The flags alone, as the README spells them: no OUTPOST_TLS_* here.
	bare := session{dir: c.admin.dir, server: c.url, creds: c.creds("admin")}
	r := bare.outpost(t, "--tls-ca", f.CA, "--tls-cert", f.ClientCert, "--tls-key", f.ClientKey, "run", "--tag", "local", "--", "echo", "hi")
	if r.code != 0 || r.stdout != "hi\n" {
		t.Errorf("outpost run with the CA and the client certificate:\n%s", r)
	}

	for _, tc := range []struct {
		name  string
		flags []string
		cause []string // what the refusal may say, one of them
	}{
		// The server refuses the missing certificate after the handshake:
		// the client reads its alert, or finds the connection closed.
		{"without a client certificate", []string{"--tls-ca", f.CA}, []string{"certificate required", "closed by remote after TLS handshake"}},
		{"without the CA", []string{"--tls-cert", f.ClientCert, "--tls-key", f.ClientKey}, []string{"certificate signed by unknown authority"}},
	} {
		r := bare.outpost(t, append(tc.flags, "run", "--tag", "local", "--", "echo", "hi")...)
		clear := strings.Contains(r.stderr, "TLS with "+c.url+" failed (check --tls-ca, and --tls-cert/--tls-key")
		if r.code == 0 || r.stdout != "" || !clear || !slices.ContainsFunc(tc.cause, func(s string) bool { return strings.Contains(r.stderr, s) }) {
			t.Errorf("outpost run %s: want a TLS refusal that names the TLS flags and says one of %q\n%s", tc.name, tc.cause, r)
		}
	}

	// A client that speaks plain NATS gets the server's INFO, which asks
	// for TLS, and is cut off at its first plain-text command.
	conn, info := dialRaw(t, c.url)
	if !strings.Contains(info, `"tls_required":true`) {
		t.Errorf("the server's INFO does not ask for TLS: %s", info)
	}
	if _, err := io.WriteString(conn, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n"); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the server kept a plain-text connection open: %v", err)
	}
	if strings.Contains(string(rest), "PONG") {
		t.Errorf("the server answered a plain-text client: %q", rest)
	}

	// TLS 1.1 is refused at the handshake; TLS 1.2 with the same
	// certificates gets through it, so the refusal is the version's.
	for _, v := range []struct {
		name    string
		version uint16
		ok      bool
	}{{"TLS 1.1", tls.VersionTLS11, false}, {"TLS 1.2", tls.VersionTLS12, true}} {
		conn, _ := dialRaw(t, c.url)
		err := tlsHandshake(t, conn, f, v.version)
		switch {
		case v.ok && err != nil:
			t.Errorf("a %s handshake with the CA and the client certificate failed: %v", v.name, err)
		case !v.ok && err == nil:
			t.Errorf("the server accepted a %s handshake", v.name)
		case !v.ok && !strings.Contains(err.Error(), "protocol version"):
			t.Errorf("a %s handshake failed with %v, want a protocol version refusal", v.name, err)
		}
	}
}

// dialRaw opens a TCP connection to a NATS URL and reads the server's
// INFO line, which comes in plain text before any TLS.
func dialRaw(t *testing.T, natsURL string) (net.Conn, string) {
	t.Helper()
	u, err := url.Parse(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// A deadline for the whole exchange, so that a server that never
	// answers fails the test rather than hanging it.
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(io.LimitReader(conn, 4096)).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("read the server's INFO: %q, %v", line, err)
	}
	return conn, line
}

// tlsHandshake runs a TLS handshake on conn with the CA and the client
// certificate, offering no version above max.
func tlsHandshake(t *testing.T, conn net.Conn, f tlsSetup, max uint16) error {
	t.Helper()
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("no certificate in %s", f.CA)
	}
	cert, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(conn, &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1",
		MinVersion: tls.VersionTLS10, MaxVersion: max,
	})
	return tc.Handshake()
}
