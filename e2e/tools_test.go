package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/outpost-run/outpost/internal/testenv"
)

// requireTool returns the path of an operator's tool a test drives, such
// as prometheus or systemd-analyze. Without it the test is skipped with a
// note saying where it comes from, unless OUTPOST_REQUIRE_TOOLS is set, as
// CI sets it: there a missing tool fails the test, so that a broken install
// step cannot pass as a skip.
func requireTool(t testing.TB, name, from string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("OUTPOST_REQUIRE_TOOLS") != "" {
		t.Fatalf("%s is not on PATH and OUTPOST_REQUIRE_TOOLS is set: install %s", name, from)
	}
	t.Skipf("%s is not on PATH: install %s (set OUTPOST_REQUIRE_TOOLS=1 to fail instead of skipping)", name, from)
	return ""
}

// deployPath is the path of a file or directory under deploy/ in this tree.
func deployPath(t testing.TB, elem ...string) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(append([]string{root, "deploy"}, elem...)...)
}
