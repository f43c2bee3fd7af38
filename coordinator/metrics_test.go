package coordinator_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

func TestMetricsAndHealth(t *testing.T) {
	env := testenv.New(t)
	reg := prometheus.NewRegistry()
	co := env.StartCoordinatorWith(coordinator.Config{Metrics: reg})
	srv := httptest.NewServer(co.Handler(reg))
	defer srv.Close()
	alice := env.Dial(env.Creds(accounts.RoleUser, "alice", "a", "b"))
	ctx := testenv.Context(t)
	// One job waits (no agent of tag b runs); two run on tag a and end.
	env.Creds(accounts.RoleAgent, "agent-b", "b")
	submit(t, alice, subjects.JobSpec{Tag: "b", Command: []string{"true"}})
	env.StartAgent(env.Creds(accounts.RoleAgent, "agent-a", "a"), agent.Config{Heartbeat: 50 * time.Millisecond})
	for _, cmd := range [][]string{{"echo", "hi"}, {"false"}} {
		r := submit(t, alice, subjects.JobSpec{Tag: "a", Command: cmd})
		testenv.Eventually(t, "job to end", func() bool {
			got, err := alice.Get(ctx, r.ID)
			return err == nil && got.State.Terminal()
		})
	}
	want := []string{
		`outpost_jobs_submitted_total{tag="a"} 2`,
		`outpost_jobs_submitted_total{tag="b"} 1`,
		`outpost_jobs_finished_total{state="succeeded",tag="a"} 1`,
		`outpost_jobs_finished_total{state="failed",tag="a"} 1`,
		`outpost_queue_depth{tag="b"} 1`,
		`outpost_queue_depth{tag="a"} 0`,
		`outpost_jobs_running{tag="a"} 0`,
		`outpost_api_requests_total{result="ok",verb="submit"} 3`,
		`outpost_job_run_duration_seconds_count{state="failed",tag="a"} 1`,
		`outpost_job_queue_wait_seconds_count{tag="a"} 2`,
		`outpost_jetstream_up 1`,
		`outpost_agents{state="idle",tag="a"} 1`,
		`outpost_agents{state="busy",tag="a"} 0`,
		`outpost_log_lines_total 1`,
		`outpost_log_bytes_total 3`,
		`outpost_build_info{`,
	}
	var body string
	// A heartbeat sent while the last job ran counts the agent busy; wait
	// for one sent after it.
	testenv.Eventually(t, "the metrics to count both finished jobs, the line and the idle agent", func() bool {
		body = testenv.Get(t, srv.URL+"/metrics")
		return strings.Contains(body, want[3]) && strings.Contains(body, `outpost_log_lines_total 1`) &&
			strings.Contains(body, `outpost_agents{state="idle",tag="a"} 1`)
	})
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
	if !strings.Contains(body, `outpost_queue_oldest_age_seconds{tag="b"}`) || strings.Contains(body, `outpost_queue_oldest_age_seconds{tag="b"} 0`+"\n") {
		t.Error("the waiting job's age is not reported")
	}
	if got := testenv.Get(t, srv.URL+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz: %q", got)
	}
	if got := testenv.Get(t, srv.URL+"/readyz"); got != "ready\n" {
		t.Errorf("/readyz: %q", got)
	}
}
