package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-run/outpost/internal/testenv"
)

// TestClusterSurvivesANodeLoss runs Outpost on a three-node JetStream
// cluster started from deploy/nats/cluster.conf as it stands, with every
// stream and bucket at R3. A job prints a line every few milliseconds while
// one node is killed; the job still ends, once, and its replay holds every
// line exactly once and in order.
func TestClusterSurvivesANodeLoss(t *testing.T) {
	requireNATSTools(t)
	t.Parallel()
	dir, data := initWithDeployConfs(t, "cluster.conf")
	const nodes = 3
	var client, route [nodes]int
	var routes []string
	for i := range nodes {
		client[i], route[i] = freePort(t), freePort(t)
		routes = append(routes, fmt.Sprintf("%q", "nats://127.0.0.1:"+strconv.Itoa(route[i])))
	}
	var servers [nodes]*proc
	var urls []string
	for i := range nodes {
		env := baseEnv(
			"OUTPOST_NODE=n"+strconv.Itoa(i+1),
			"OUTPOST_LISTEN=127.0.0.1:"+strconv.Itoa(client[i]),
			"OUTPOST_CLUSTER_LISTEN=127.0.0.1:"+strconv.Itoa(route[i]),
			"OUTPOST_ROUTES=["+strings.Join(routes, ",")+"]",
			"OUTPOST_STATE="+filepath.Join(dir, "n"+strconv.Itoa(i+1)),
		)
		servers[i] = startProc(t, dir, env, bins.natsServer, "-c", filepath.Join(data, "cluster.conf"))
		urls = append(urls, "nats://127.0.0.1:"+strconv.Itoa(client[i]))
	}
	for _, s := range servers {
		waitServerReady(t, s)
	}
	testenv.EventuallyWithin(t, startTimeout, "the nodes to elect a JetStream meta leader", func() bool {
		return slices.ContainsFunc(servers[:], func(s *proc) bool {
			return strings.Contains(s.stderr.String(), "Self is new JetStream cluster metadata leader")
		})
	})
	all := strings.Join(urls, ",")
	c := startCoordinator(t, coordOptions{data: data, natsURL: all, noLocalAgent: true, args: []string{"--replicas", "3"}})
	c.url, c.admin.server = all, all
	agent := c.issue(t, "agent", "agent-c", "--tag", "c")
	c.startAgentWith(t, agent)

	gate := filepath.Join(dir, "gate")
	id := c.admin.submit(t, "--tag", "c", "--env", "GATE="+gate, "--", "sh", "-c",
		`i=0; while [ ! -e "$GATE" ] || [ $i -lt 300 ]; do i=$((i+1)); echo "line $i"; sleep 0.005; done`)
	c.admin.waitState(t, id, "running")
	// Kill the first node while the job prints.
	servers[0].kill(t)
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rec := c.admin.waitState(t, id)
	if rec.State != "succeeded" || rec.Attempt != 1 {
		t.Fatalf("after a node loss the job ended %s on attempt %d (%s)", rec.State, rec.Attempt, rec.Error)
	}
	// A replay needs a new consumer, which waits for the stream's new
	// leader; until then the coordinator says to retry.
	var r result
	testenv.EventuallyWithin(t, jobTimeout, "a replay of the job", func() bool {
		r = c.admin.outpost(t, "logs", id)
		return r.code == 0
	})
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	for i, l := range lines {
		if l != "line "+strconv.Itoa(i+1) {
			t.Fatalf("replay line %d is %q (of %d lines)", i+1, l, len(lines))
		}
	}
	if len(lines) < 300 {
		t.Errorf("replayed %d lines, want at least 300", len(lines))
	}
	t.Logf("a node was killed mid-job: %d lines replayed, once each and in order", len(lines))
}
