package agent_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-run/outpost/agent"
	"github.com/outpost-run/outpost/coordinator"
	"github.com/outpost-run/outpost/internal/testenv"
	"github.com/outpost-run/outpost/subjects"
)

func TestAgentMetrics(t *testing.T) {
	s := newSite(t, coordinator.Limits{})
	a := s.env.StartAgent(s.agentCreds, agent.Config{Concurrency: 3})
	reg := prometheus.NewRegistry()
	if err := a.Register(reg); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler(reg))
	defer srv.Close()
	job := s.submit(t, subjects.JobSpec{Tag: "a", Command: sh("echo one; echo two >&2")})
	s.waitState(t, job.ID, subjects.StateSucceeded)
	body := testenv.Get(t, srv.URL+"/metrics")
	for _, want := range []string{
		"outpost_agent_slots_used 0", "outpost_agent_slots_free 3",
		"outpost_agent_log_lines_total 2", "outpost_agent_log_bytes_total 8",
		"outpost_agent_publish_retries_total 0", "outpost_agent_reconnects_total 0",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if got := testenv.Get(t, srv.URL+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz: %q", got)
	}
}
