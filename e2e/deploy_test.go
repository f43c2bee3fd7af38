package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrometheusRules checks deploy/prometheus with promtool as an operator
// would before shipping it: the configuration and the alerting rules are
// valid, and the rules' unit tests in alerts_test.yml pass.
func TestPrometheusRules(t *testing.T) {
	promtool := requireTool(t, "promtool", "the Debian package prometheus")
	t.Parallel()
	dir := deployPath(t, "prometheus")
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		r := runCmd(t, dir, baseEnv(), promtool, args...)
		out := r.stdout + r.stderr
		if r.code != 0 || !strings.Contains(out, "SUCCESS") || strings.Contains(out, "WARNING") {
			t.Errorf("promtool %s:\n%s", strings.Join(args, " "), r)
		}
	}
}

// TestSystemdUnits runs 'systemd-analyze verify' on deploy/systemd, which
// must print nothing: it exits 0 even on a line it ignores. verify also
// wants every ExecStart binary to exist, so the units are checked from a
// copy in which /usr/local/bin, where the README installs the binaries,
// is a directory of the binaries built from this tree (and the stock
// nats-server, or a stand-in for it when it is not installed). 'systemd-
// analyze security' then rates each unit's exposure: at most 2 of 10 for
// the coordinator and nats-server, and 3 for the agent, whose jobs need
// more of the system.
func TestSystemdUnits(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze", "the Debian package systemd")
	t.Parallel()
	binDir := filepath.Join(t.TempDir(), "bin")
	natsServer := bins.natsServer
	if natsServer == "" {
		natsServer = bin("agent")
	}
	links := map[string]string{"coordinator": bin("coordinator"), "agent": bin("agent"), "nats-server": natsServer}
	if err := os.Mkdir(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(binDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	src, dir := deployPath(t, "systemd"), t.TempDir()
	units, err := filepath.Glob(filepath.Join(src, "*.service"))
	if err != nil || len(units) != 3 {
		t.Fatalf("deploy/systemd holds %d units (%v), want 3", len(units), err)
	}
	var names []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "\nExecStart=/usr/local/bin/") {
			t.Errorf("%s: ExecStart does not start a binary in /usr/local/bin", filepath.Base(u))
		}
		for _, l := range strings.Split(string(b), "\n") {
			cmd, ok := strings.CutPrefix(l, "ExecStart=/usr/local/bin/")
			if !ok {
				cmd, ok = strings.CutPrefix(l, "ExecStartPre=/usr/local/bin/")
			}
			if f := strings.Fields(cmd); ok && len(f) > 0 && (f[0] != "nats-server" || bins.natsServer != "") {
				checkFlags(t, filepath.Base(u), filepath.Join(binDir, f[0]), f[1:])
			}
		}
		b = bytes.ReplaceAll(b, []byte("/usr/local/bin/"), []byte(binDir+"/"))
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(u)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(u))
	}
	if r := runCmd(t, dir, baseEnv(), analyze, append([]string{"verify"}, names...)...); r.code != 0 || r.stdout+r.stderr != "" {
		t.Errorf("systemd-analyze verify %s:\n%s", strings.Join(names, " "), r)
	}
	for _, name := range names {
		// --threshold counts tenths of the exposure level it prints.
		threshold := 20
		if name == "outpost-agent.service" {
			threshold = 30
		}
		r := runCmd(t, dir, baseEnv(), analyze, "security", "--offline=yes", "--no-pager", fmt.Sprintf("--threshold=%d", threshold), name)
		if r.code != 0 {
			t.Errorf("systemd-analyze security %s: exposure above %.1f\n%s", name, float64(threshold)/10, r)
		}
	}
}
