package e2e

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-run/outpost/internal/testenv"
)

// TestStockNATSServer runs Outpost on a separately started stock
// nats-server, as the README's "On a stock nats-server" section says:
// 'coordinator init' writes the server's configuration, nats-server runs
// it, and the coordinator attaches with --nats-url. A job runs through
// 'outpost run', and after a coordinator restart the earlier job's output
// still replays and new jobs still run.
func TestStockNATSServer(t *testing.T) {
	requireNATSTools(t)
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	url := startStockServer(t, data)

	c := startCoordinator(t, coordOptions{data: data, natsURL: url})
	r := c.admin.outpost(t, "run", "--tag", "local", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3")
	if r.code != 3 || r.stdout != "hi\n" || r.stderr != "oops\n" {
		t.Errorf("run on a stock server: want exit 3, \"hi\\n\", \"oops\\n\"; got\n%s", r)
	}
	id := c.admin.submit(t, "--tag", "local", "--", "sh", "-c", "echo before restart")
	if rec := c.admin.waitState(t, id); rec.State != "succeeded" {
		t.Fatalf("job ended %s", rec.State)
	}

	c.restart(t)
	if r := c.admin.mustOutpost(t, "logs", id); r.stdout != "before restart\n" {
		t.Errorf("logs after a coordinator restart: %q, want \"before restart\\n\"", r.stdout)
	}
	if rec := c.admin.status(t, id); rec.State != "succeeded" || rec.Agent != "local-agent" {
		t.Errorf("status after a coordinator restart: %+v", rec)
	}
	if r := c.admin.outpost(t, "run", "--tag", "local", "--", "echo", "after restart"); r.code != 0 || r.stdout != "after restart\n" {
		t.Errorf("run after a coordinator restart:\n%s", r)
	}
}

// stockServer is a stock nats-server running the configuration that
// 'coordinator init' wrote in data.
type stockServer struct {
	url, data string
	proc      *proc
}

// startStockServer initialises a data directory for a server on a free
// port and starts nats-server with the configuration it wrote, returning
// the server's URL. The port can be taken between the choice and the
// bind, so a server that cannot bind is retried on another port. initArgs
// are more flags for 'coordinator init', such as --tls.
func startStockServer(t *testing.T, data string, initArgs ...string) string {
	t.Helper()
	return newStockServer(t, data, initArgs...).url
}

func newStockServer(t testing.TB, data string, initArgs ...string) *stockServer {
	t.Helper()
	return newStockServerOn(t, data, "127.0.0.1", initArgs...)
}

// newStockServerOn is newStockServer listening on another address of
// this machine.
func newStockServerOn(t testing.TB, data, host string, initArgs ...string) *stockServer {
	t.Helper()
	for range 3 {
		listen := net.JoinHostPort(host, strconv.Itoa(freePortOn(t, host)))
		r := runCmd(t, filepath.Dir(data), baseEnv(), bin("coordinator"), append([]string{"init", "--data", data, "--listen", listen}, initArgs...)...)
		if r.code != 0 || !strings.Contains(r.stdout, "nats-server -c "+filepath.Join(data, "nats-server.conf")) {
			t.Fatalf("coordinator init:\n%s", r)
		}
		s := &stockServer{url: "nats://" + listen, data: data}
		if s.start(t) {
			return s
		}
		t.Logf("nats-server could not start on %s; trying another port:\n%s", listen, tail(s.proc.stderr.String(), 10))
	}
	t.Fatal("nats-server did not start")
	return nil
}

// start runs nats-server and reports whether it became ready.
func (s *stockServer) start(t testing.TB) bool {
	t.Helper()
	s.proc = startProc(t, filepath.Dir(s.data), baseEnv(), bins.natsServer, "-c", filepath.Join(s.data, "nats-server.conf"))
	testenv.EventuallyWithin(t, startTimeout, "nats-server to listen on "+s.url, func() bool {
		return s.proc.exited() || strings.Contains(s.proc.stderr.String(), "Server is ready")
	})
	return !s.proc.exited()
}

// kill ends the server with SIGKILL, as a crash would.
func (s *stockServer) kill(t testing.TB) {
	t.Helper()
	s.proc.kill(t)
}

// restart starts the server again on its port and store after kill.
func (s *stockServer) restart(t testing.TB) {
	t.Helper()
	testenv.EventuallyWithin(t, startTimeout, "nats-server to start again on "+s.url, func() bool { return s.start(t) })
}
