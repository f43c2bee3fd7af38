package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-run/outpost/internal/testenv"
)

// bins says where the binaries under test and the stock NATS tools are. TestMain
// sets it once, before any test runs, and nothing changes it afterwards.
var bins struct {
	dir        string // coordinator, agent and outpost, built from this tree
	nats       string // the nats CLI, or "" when it is not installed
	natsServer string // nats-server, or "" when it is not installed
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "outpost-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := testenv.BuildCommands(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	bins.dir = dir
	bins.nats = findTool("nats")
	bins.natsServer = findTool("nats-server")
	return m.Run()
}

// findTool looks for a stock NATS tool on PATH, then where 'make tools'
// installs it: $(go env GOPATH)/bin.
func findTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	out, err := exec.Command(testenv.GoTool(), "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
		p := filepath.Join(d, "bin", name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// requireNATSTools skips a test that drives the stock nats CLI or
// nats-server when they are missing, saying how to get them.
func requireNATSTools(t testing.TB) {
	t.Helper()
	if bins.nats == "" || bins.natsServer == "" {
		t.Skip("the nats CLI and nats-server are not installed (looked on PATH and in $(go env GOPATH)/bin): run 'make tools'")
	}
}

// bin is the path of one of the binaries built from this tree.
func bin(name string) string { return filepath.Join(bins.dir, name) }
