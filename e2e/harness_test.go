package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/internal/testenv"
)

// Deadlines. They bound waits for things that normally take milliseconds,
// so that a broken build fails instead of hanging; they are never asserted.
const (
	startTimeout   = 60 * time.Second // a process becomes ready (a cluster of three under the whole suite took over 30 s once)
	commandTimeout = 60 * time.Second // one CLI invocation runs to its end
	jobTimeout     = 30 * time.Second // a job reaches the state waited for
	stopTimeout    = 10 * time.Second // a process exits after SIGTERM
)

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a process that runs in the background of a test. It is ended in
// the test's cleanup: SIGTERM, then SIGKILL if it does not exit in time.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed once it has exited
}

func startProc(t testing.TB, dir string, env []string, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: filepath.Base(path) + " " + strings.Join(args, " "), done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	// A grandchild that keeps the output pipes open must not hang Wait.
	p.cmd.WaitDelay = stopTimeout
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.terminate()
		if t.Failed() {
			t.Logf("%s (pid %d, exit %d)\n--- stdout:\n%s\n--- stderr:\n%s", p.name, p.cmd.Process.Pid, p.cmd.ProcessState.ExitCode(), p.stdout.String(), tail(withoutServerLog(p.stderr.String()), 60))
		}
	})
	return p
}

// terminate asks the process to exit and waits for it; it is a no-op once
// the process has exited.
func (p *proc) terminate() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit on its own and returns its exit code.
// kill SIGKILLs the process, as a crash would, and waits for it to be gone.
func (p *proc) kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	p.wait(t, stopTimeout)
}

func (p *proc) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s\nstdout:\n%s\nstderr:\n%s", p.name, timeout, p.stdout.String(), p.stderr.String())
		return 0
	}
}

// result is what a finished command printed and how it exited.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s\n--- stderr:\n%s", r.code, tail(r.stdout, 40), tail(r.stderr, 40))
}

// runCmd runs a command to its end.
func runCmd(t testing.TB, dir string, env []string, path string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s did not finish within %s\n%s", filepath.Base(path), strings.Join(args, " "), commandTimeout, r)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", path, err)
	}
	return r
}

// baseEnv is the test process's environment without the user's own Outpost
// and NATS settings, which must not steer the binaries under test.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OUTPOST_") || strings.HasPrefix(kv, "NATS_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// session is someone at a terminal: a working directory, a server, and the
// credential they use (none: the CLI falls back to ./.outpost/creds).
type session struct {
	dir, server, creds string
	// extra is more environment, such as the OUTPOST_TLS_* settings of a
	// server that wants TLS.
	extra []string
}

func (s session) env() []string {
	env := baseEnv("OUTPOST_SERVER=" + s.server)
	if s.creds != "" {
		env = append(env, "OUTPOST_CREDS="+s.creds)
	}
	return append(env, s.extra...)
}

// outpost runs the CLI to its end.
func (s session) outpost(t testing.TB, args ...string) result {
	t.Helper()
	return runCmd(t, s.dir, s.env(), bin("outpost"), args...)
}

// startOutpost runs the CLI in the background, as for 'logs -f'.
func (s session) startOutpost(t testing.TB, args ...string) *proc {
	t.Helper()
	return startProc(t, s.dir, s.env(), bin("outpost"), args...)
}

// mustOutpost runs the CLI and fails the test unless it succeeds.
func (s session) mustOutpost(t testing.TB, args ...string) result {
	t.Helper()
	r := s.outpost(t, args...)
	if r.code != 0 {
		t.Fatalf("outpost %s:\n%s", strings.Join(args, " "), r)
	}
	return r
}

var jobIDRE = regexp.MustCompile(`^[0-9a-z]{26}$`)

// submit starts a job with 'outpost run --detach' and returns its ID.
func (s session) submit(t testing.TB, args ...string) string {
	t.Helper()
	r := s.mustOutpost(t, append([]string{"run", "--detach"}, args...)...)
	id := strings.TrimSpace(r.stdout)
	if !jobIDRE.MatchString(id) || r.stdout != id+"\n" {
		t.Fatalf("run --detach printed %q, want a job ID and a newline", r.stdout)
	}
	return id
}

// status reads a job's record with 'outpost status -o json'.
func (s session) status(t testing.TB, id string) jobRecord {
	t.Helper()
	r := s.mustOutpost(t, "status", id, "-o", "json")
	var rec jobRecord
	if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, r.stdout)
	}
	return rec
}

// list reads job records with 'outpost ls -o json' and the given filters.
func (s session) list(t testing.TB, filters ...string) []jobRecord {
	t.Helper()
	r := s.mustOutpost(t, append([]string{"ls", "-o", "json"}, filters...)...)
	var recs []jobRecord
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil {
		t.Fatalf("ls -o json: %v\n%s", err, r.stdout)
	}
	return recs
}

// waitState polls a job's record until it reaches a terminal state or,
// when states are given, one of them.
func (s session) waitState(t testing.TB, id string, states ...string) jobRecord {
	t.Helper()
	var rec jobRecord
	want := "a terminal state"
	if len(states) > 0 {
		want = strings.Join(states, " or ")
	}
	testenv.EventuallyWithin(t, jobTimeout, "job "+id+" to reach "+want, func() bool {
		rec = s.status(t, id)
		if len(states) == 0 {
			return terminal(rec.State)
		}
		return slices.Contains(states, rec.State)
	})
	return rec
}

func terminal(state string) bool {
	switch state {
	case "succeeded", "failed", "stopped", "timed_out":
		return true
	}
	return false
}

// coordOptions shape a coordinator started by startCoordinator.
type coordOptions struct {
	// noLocalAgent starts it with --local-agent=false.
	noLocalAgent bool
	// natsURL attaches it to a separately started server instead of
	// embedding one; data must then be the directory 'coordinator init' made.
	natsURL string
	// data is the data directory; empty means a fresh temporary one.
	data string
	// creds are issued into the data directory before the start, as an
	// operator does offline; 'coordinator run' registers them.
	creds []accounts.Request
	// env is added to the coordinator's environment.
	env []string
	// args are more flags for 'coordinator run'.
	args []string
	// clientEnv is added to the environment of every CLI and agent run
	// against this coordinator, such as OUTPOST_TLS_* for a TLS server.
	clientEnv []string
}

// coord is a running 'coordinator run' and its data directory.
type coord struct {
	data      string
	url       string // where clients connect
	args      []string
	env       []string
	clientEnv []string
	proc      *proc
	admin     session // the admin, in a directory of their own
}

func startCoordinator(t testing.TB, o coordOptions) *coord {
	t.Helper()
	c := &coord{data: o.data, env: baseEnv(o.env...), clientEnv: o.clientEnv}
	if c.data == "" {
		c.data = filepath.Join(t.TempDir(), "data")
	}
	if len(o.creds) > 0 {
		issueCreds(t, c.data, o.creds...)
	}
	// Port 0 for metrics too: parallel coordinators never share a port.
	c.args = []string{"run", "--data", c.data, "--http", "127.0.0.1:0"}
	if o.natsURL != "" {
		c.url = o.natsURL
		c.args = append(c.args, "--nats-url", o.natsURL)
	} else {
		// Port 0: the embedded server picks a free port and the banner says
		// which, so parallel tests never race for one.
		c.args = append(c.args, "--listen", "127.0.0.1:0")
	}
	if o.noLocalAgent {
		c.args = append(c.args, "--local-agent=false")
	}
	c.args = append(c.args, o.args...)
	c.admin = session{dir: t.TempDir(), creds: c.creds("admin"), extra: o.clientEnv}
	c.start(t)
	return c
}

var bannerURL = regexp.MustCompile(`listening on (nats://\S+);`)

// start runs the coordinator and waits until its API answers.
func (c *coord) start(t testing.TB) {
	t.Helper()
	c.proc = startProc(t, filepath.Dir(c.data), c.env, bin("coordinator"), c.args...)
	testenv.EventuallyWithin(t, startTimeout, "the coordinator's banner", func() bool {
		if c.proc.exited() {
			t.Fatalf("coordinator exited at start:\n%s", tail(c.proc.stderr.String(), 40))
		}
		return strings.Contains(c.proc.stdout.String(), "Outpost coordinator is running")
	})
	if m := bannerURL.FindStringSubmatch(c.proc.stdout.String()); m != nil {
		c.url = m[1]
	}
	c.admin.server = c.url
	// The banner comes before the API subscribes: wait until it answers.
	c.waitAPI(t)
}

// waitAPI waits until the coordinator's API answers.
func (c *coord) waitAPI(t testing.TB) {
	t.Helper()
	testenv.EventuallyWithin(t, startTimeout, "the coordinator's API to answer", func() bool {
		if c.proc.exited() {
			t.Fatalf("coordinator exited at start:\n%s", tail(c.proc.stderr.String(), 40))
		}
		return c.admin.outpost(t, "ls", "-n", "1").code == 0
	})
}

// restart stops the coordinator with SIGTERM and starts it again on the
// same data directory.
func (c *coord) restart(t testing.TB) {
	t.Helper()
	c.proc.terminate()
	if code := c.proc.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("coordinator exited %d on SIGTERM, want 0\n%s", code, tail(c.proc.stderr.String(), 20))
	}
	c.start(t)
}

// creds is the path of a creds file kept in the data directory.
func (c *coord) creds(name string) string {
	return filepath.Join(c.data, "creds", name+".creds")
}

// as is a session of the named credential, next to the admin's.
func (c *coord) as(name string) session {
	return session{dir: c.admin.dir, server: c.url, creds: c.creds(name), extra: c.clientEnv}
}

// with is the same session with another creds file.
func (s session) with(creds string) session {
	s.creds = creds
	return s
}

// startAgent runs the agent binary with a credential from the data
// directory, with a work directory of its own.
func (c *coord) startAgent(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return c.startAgentWith(t, c.creds(name), args...)
}

// startAgentWith runs the agent binary with the creds file at path, such
// as one that 'outpost admin agent add' printed.
func (c *coord) startAgentWith(t testing.TB, creds string, args ...string) *proc {
	t.Helper()
	return c.startAgentWithURL(t, c.url, creds, args...)
}

// startAgentWithURL runs the agent binary against the server at url, such
// as a leaf node, rather than the coordinator's.
func (c *coord) startAgentWithURL(t testing.TB, url, creds string, args ...string) *proc {
	t.Helper()
	args = append([]string{"--server", url, "--creds", creds, "--workdir", t.TempDir()}, args...)
	a := startProc(t, t.TempDir(), baseEnv(c.clientEnv...), bin("agent"), args...)
	testenv.EventuallyWithin(t, startTimeout, "agent "+filepath.Base(creds)+" to be ready", func() bool {
		if a.exited() {
			t.Fatalf("agent %s exited at start:\n%s", creds, a.stderr.String())
		}
		return strings.Contains(a.stderr.String(), "agent ready")
	})
	return a
}

// issue issues a credential through the admin API as an operator does:
// 'outpost admin agent add NAME --tag T > NAME.creds' for role agent, else
// 'outpost admin user add NAME --role ROLE --tag T'. args are more flags
// (--tag, --expires). The creds file goes into a directory of the test's
// own, mode 0600, and its path is returned.
func (c *coord) issue(t testing.TB, role, name string, args ...string) string {
	t.Helper()
	cmd := []string{"admin", "agent", "add", name}
	if role != "agent" {
		cmd = []string{"admin", "user", "add", name, "--role", role}
	}
	r := c.admin.mustOutpost(t, append(cmd, args...)...)
	if !strings.Contains(r.stdout, "BEGIN NATS USER JWT") || !strings.Contains(r.stderr, fmt.Sprintf("issued %s credential %q", role, name)) {
		t.Fatalf("outpost %s printed no creds file:\n%s", strings.Join(cmd, " "), r)
	}
	p := filepath.Join(t.TempDir(), name+".creds")
	if err := os.WriteFile(p, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// issueCreds issues credentials into a data directory the way an operator
// does before the admin API exists: through the accounts package, offline.
// The directory is initialised first if it is new.
func issueCreds(t testing.TB, data string, reqs ...accounts.Request) {
	t.Helper()
	auth, _, err := accounts.Init(data)
	if err != nil {
		t.Fatalf("accounts.Init(%s): %v", data, err)
	}
	for _, req := range reqs {
		if _, err := auth.EnsureCreds(req); err != nil {
			t.Fatalf("issue creds %s: %v", req.Name, err)
		}
	}
}

// freePort finds a TCP port on 127.0.0.1 that nobody listens on right now.
// Someone may take it before it is used; callers that bind it retry.
func freePort(t testing.TB) int {
	t.Helper()
	return freePortOn(t, "127.0.0.1")
}

// freePortOn is freePort on another address of this machine.
func freePortOn(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// jobRecord is a job record as the API and 'outpost status -o json' give it,
// decoded with the field names the README documents rather than with
// Outpost's own Go types, as a third-party client would.
type jobRecord struct {
	ID            string     `json:"id"`
	Tag           string     `json:"tag"`
	Owner         string     `json:"owner"`
	Command       []string   `json:"command"`
	State         string     `json:"state"`
	Agent         string     `json:"agent"`
	Attempt       int        `json:"attempt"`
	MaxAttempts   int        `json:"max_attempts"`
	ExitCode      *int       `json:"exit_code"`
	Error         string     `json:"error"`
	SubmittedAt   time.Time  `json:"submitted_at"`
	StartedAt     *time.Time `json:"started_at"`
	FinishedAt    *time.Time `json:"finished_at"`
	StopRequested bool       `json:"stop_requested"`
}

// apiReply is every API reply.
type apiReply struct {
	Job    *jobRecord  `json:"job"`
	Jobs   []jobRecord `json:"jobs"`
	Reader *reader     `json:"reader"`
	Error  *apiError   `json:"error"`
}

// reader is a reader consumer the coordinator made on a read request.
type reader struct {
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	Pending  int    `json:"pending"`
}

// pullAll pulls n messages from a consumer with one bare MSG.NEXT request,
// as any NATS client can, and returns them in order. It fails the test on
// a status from the server before n arrived.
func pullAll(t testing.TB, nc *natsConn, stream, consumer string, n int) []*nats.Msg {
	t.Helper()
	msgs, status := pullHere(t, nc, reader{Stream: stream, Consumer: consumer}, n)
	if status != "" {
		t.Fatalf("pull %s: %d of %d messages, then status %s", consumer, len(msgs), n, status)
	}
	return msgs
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// statusEvent is a status event as stored on a job's status subject.
type statusEvent struct {
	Job      string    `json:"job"`
	State    string    `json:"state"`
	Attempt  int       `json:"attempt"`
	Agent    string    `json:"agent"`
	ExitCode *int      `json:"exit_code"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
}

func exitCode(p *int) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

// natsConn is a plain nats.go connection, made as a third-party client
// makes it, that keeps the errors the server reports asynchronously:
// permission denials arrive only there (NATS-NOTES point 7).
type natsConn struct {
	*nats.Conn
	js jetstream.JetStream

	mu   sync.Mutex
	errs []string
}

// dialNATS connects with a creds file. inbox is the inbox prefix to use;
// empty keeps nats.go's default. opts come after the harness's own.
func dialNATS(t testing.TB, url, creds, inbox string, opts ...nats.Option) *natsConn {
	t.Helper()
	c := &natsConn{}
	opts = append([]nats.Option{
		nats.UserCredentials(creds),
		nats.Name("outpost-e2e"),
		nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err.Error())
			c.mu.Unlock()
		}),
	}, opts...)
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to %s with %s: %v", url, creds, err)
	}
	t.Cleanup(nc.Close)
	c.Conn = nc
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return c
}

// asyncErrors are the errors the server reported on the connection so far.
func (c *natsConn) asyncErrors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.errs)
}

// denial returns the permission violation reported for a subject that
// starts with prefix (a whole subject matches itself), if any.
func (c *natsConn) denial(prefix string) string {
	for _, e := range c.asyncErrors() {
		if strings.Contains(strings.ToLower(e), "permissions violation") && strings.Contains(e, `"`+prefix) {
			return e
		}
	}
	return ""
}

// waitDenied waits until the server has reported a permission violation
// for a subject starting with prefix on this connection.
func (c *natsConn) waitDenied(t testing.TB, prefix string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.denial(prefix) == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no permission violation reported for %q; errors seen: %q", prefix, c.asyncErrors())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireDenied runs op, which must be refused by the server: the server
// reports a permission violation for subject and op fails. op's context
// ends once the violation is seen, since nats.go itself would only time out.
func (c *natsConn) requireDenied(t testing.TB, subject string, op func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- op(ctx) }()
	c.waitDenied(t, subject)
	cancel()
	if err := <-errc; err == nil {
		t.Errorf("%s: the operation succeeded; want it refused", subject)
	}
}

// request sends an API request on a plain connection and decodes the reply.
func (c *natsConn) request(t testing.TB, subject string, payload []byte) apiReply {
	t.Helper()
	m, err := c.Request(subject, payload, 10*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v (async errors: %q)", subject, err, c.asyncErrors())
	}
	var r apiReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("reply to %s: %v\n%s", subject, err, m.Data)
	}
	return r
}

// withoutServerLog drops the embedded nats-server's own log lines, which
// drown the coordinator's in a failure report.
func withoutServerLog(s string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.Contains(l, "part=nats-server") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= n {
		return s
	}
	return "...\n" + strings.Join(lines[len(lines)-n:], "")
}

// writeScript writes a shell script for a job to run, so that quoting stays
// readable; jobs run it with 'sh PATH'.
func writeScript(t testing.TB, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "job.sh")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
