package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

// TestLeafNodeSite runs a site behind NAT as deploy/nats describes: the
// hub from single.conf, a leaf node from leaf.conf that dials out to it
// with a site agent's creds, and the agent connected to the leaf only.
// Jobs flow through the leaf; then the leaf's link to the hub is cut while
// a job runs and prints, and restored: the job ends, once, with every line.
func TestLeafNodeSite(t *testing.T) {
	requireNATSTools(t)
	t.Parallel()
	dir, data := initWithDeployConfs(t, "single.conf", "leaf.conf")
	hubPort, leafPort := freePort(t), freePort(t)
	hub := startProc(t, dir, baseEnv(
		"OUTPOST_LISTEN=127.0.0.1:"+strconv.Itoa(hubPort),
		"OUTPOST_LEAF_LISTEN=127.0.0.1:"+strconv.Itoa(leafPort),
		"OUTPOST_STATE="+filepath.Join(dir, "hub"),
	), bins.natsServer, "-c", filepath.Join(data, "single.conf"))
	waitServerReady(t, hub)
	hubURL := "nats://127.0.0.1:" + strconv.Itoa(hubPort)
	c := startCoordinator(t, coordOptions{data: data, natsURL: hubURL, noLocalAgent: true})
	site := c.issue(t, "agent", "site-x", "--tag", "x", "--leaf")

	// The site's only way to the hub, which the test can cut.
	link := testenv.NewProxy(t, "nats://127.0.0.1:"+strconv.Itoa(leafPort))
	sitePort := freePort(t)
	leaf := startProc(t, dir, baseEnv(
		"OUTPOST_LISTEN=127.0.0.1:"+strconv.Itoa(sitePort),
		`OUTPOST_HUB=["nats-leaf://`+strings.TrimPrefix(link.URL(), "nats://")+`"]`,
		"OUTPOST_SITE_CREDS="+site,
	), bins.natsServer, "-c", filepath.Join(data, "leaf.conf"))
	waitServerReady(t, leaf)
	testenv.EventuallyWithin(t, startTimeout, "the leaf node to reach the hub", func() bool {
		return strings.Contains(leaf.stderr.String(), "Leafnode connection created")
	})
	c.startAgentWithURL(t, "nats://127.0.0.1:"+strconv.Itoa(sitePort), site, "--js-domain", "outpost")

	if r := c.admin.outpost(t, "run", "--tag", "x", "--", "sh", "-c", "echo via the leaf"); r.code != 0 || r.stdout != "via the leaf\n" {
		t.Fatalf("a job through the leaf node:\n%s", r)
	}

	gate := filepath.Join(dir, "gate")
	id := c.admin.submit(t, "--tag", "x", "--env", "GATE="+gate, "--", "sh", "-c",
		`echo before; while [ ! -e "$GATE" ]; do sleep 0.02; done; i=0; while [ $i -lt 50 ]; do i=$((i+1)); echo "cut $i"; done; echo after`)
	c.admin.waitState(t, id, "running")
	link.Cut()
	testenv.EventuallyWithin(t, startTimeout, "the leaf node to notice the cut", func() bool {
		return strings.Contains(leaf.stderr.String(), "Leafnode connection closed")
	})
	// The job prints its lines and ends while the site is cut off.
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link.Restore()
	rec := c.admin.waitState(t, id)
	if rec.State != "succeeded" || rec.Attempt != 1 {
		t.Fatalf("after the cut the job ended %s on attempt %d (%s)", rec.State, rec.Attempt, rec.Error)
	}
	want := "before\n"
	for i := 1; i <= 50; i++ {
		want += "cut " + strconv.Itoa(i) + "\n"
	}
	want += "after\n"
	if r := c.admin.mustOutpost(t, "logs", id); r.stdout != want {
		t.Errorf("replay after the cut:\n%s\nwant every line once, in order", r.stdout)
	}

	// An agent behind the leaf reads a job's last status, as it does
	// before it runs a job handed to it again.
	conn, err := client.Dial(testenv.Context(t), client.DialOptions{URL: "nats://127.0.0.1:" + strconv.Itoa(sitePort), Creds: site, JSDomain: "outpost"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ev, err := conn.LastStatus(testenv.Context(t), "x", "admin", id)
	if err != nil || ev == nil || ev.State != subjects.StateSucceeded || ev.Attempt != 1 {
		t.Errorf("last status through the leaf: %+v, %v; want succeeded at attempt 1", ev, err)
	}
}

// initWithDeployConfs runs 'coordinator init' in a fresh directory and
// copies the named deploy/nats configurations next to the auth.conf it
// wrote, as deploy/nats says to. It returns the directory and the data
// directory in it.
func initWithDeployConfs(t *testing.T, confs ...string) (dir, data string) {
	t.Helper()
	dir = t.TempDir()
	data = filepath.Join(dir, "data")
	if r := runCmd(t, dir, baseEnv(), bin("coordinator"), "init", "--data", data); r.code != 0 {
		t.Fatalf("coordinator init:\n%s", r)
	}
	for _, f := range confs {
		b, err := os.ReadFile(deployPath(t, "nats", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, data
}

// waitServerReady waits for a nats-server process to accept clients.
func waitServerReady(t *testing.T, p *proc) {
	t.Helper()
	testenv.EventuallyWithin(t, startTimeout, p.name+" to be ready", func() bool {
		if p.exited() {
			t.Fatalf("%s exited:\n%s", p.name, tail(p.stderr.String(), 20))
		}
		return strings.Contains(p.stderr.String(), "Server is ready")
	})
}
