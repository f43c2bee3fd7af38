package e2e

import (
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
