package bench_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-run/outpost/bench"
	"github.com/outpost-run/outpost/internal/testenv"
)

// TestSmoke runs the whole bench with small counts against binaries built
// from this tree, so that every measurement keeps working. It checks that
// each figure was taken, never what it came to: that depends on the
// machine.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the bench with small counts; skipped with -short")
	}
	bin := t.TempDir()
	if err := testenv.BuildCommands(bin); err != nil {
		t.Fatal(err)
	}
	work, results := t.TempDir(), t.TempDir()
	logs := &testenv.Logs{}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{Bin: bin, Work: work, Results: results, Counts: bench.Smoke(), Logger: logs.Logger()})
	if err != nil {
		logs.Dump(t)
		dumpLogs(t, work)
		t.Fatal(err)
	}
	if len(rep.Baselines) == 0 || len(rep.Rows) == 0 {
		t.Fatalf("the report has %d baselines and %d rows", len(rep.Baselines), len(rep.Rows))
	}
	// CPU time comes in clock ticks, and a small count of jobs or idle
	// agents may cost none.
	taken := func(f bench.Figure) bool { return f.Value > 0 || (f.Value == 0 && strings.Contains(f.Name, "CPU")) }
	for _, f := range rep.Baselines {
		if !taken(f) {
			t.Errorf("baseline %q is %v", f.Name, f.Value)
		}
	}
	for _, row := range rep.Rows {
		if !taken(row.Figure) || (row.Baseline != nil && !taken(*row.Baseline)) {
			t.Errorf("figure %q is %v, beside %+v", row.Name, row.Value, row.Baseline)
		}
	}

	var table strings.Builder
	if err := rep.Print(&table); err != nil {
		t.Fatal(err)
	}
	for _, row := range rep.Rows {
		if !strings.Contains(table.String(), row.Name) {
			t.Errorf("the table lacks %q:\n%s", row.Name, table.String())
		}
	}
	b, err := os.ReadFile(filepath.Join(results, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var saved bench.Report
	if err := json.Unmarshal(b, &saved); err != nil {
		t.Fatalf("latest.json: %v", err)
	}
	if len(saved.Rows) != len(rep.Rows) || len(saved.Baselines) != len(rep.Baselines) {
		t.Errorf("latest.json has %d rows and %d baselines, the report %d and %d", len(saved.Rows), len(saved.Baselines), len(rep.Rows), len(rep.Baselines))
	}
	if entries, _ := os.ReadDir(results); len(entries) != 2 {
		t.Errorf("results holds %d files, want a timestamped one and latest.json", len(entries))
	}
	t.Logf("\n%s", table.String())
}

// dumpLogs writes the tail of each binary's log to the test log.
func dumpLogs(t *testing.T, work string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(work, "*", "logs", "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("--- %s\n%s", f, strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
}
