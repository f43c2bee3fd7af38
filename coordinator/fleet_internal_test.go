package coordinator

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-run/outpost/subjects"
)

// An agent counts as online for three 5 s beats, or two of the longest
// gaps its heartbeat says it leaves, whichever is longer; a gap is taken
// for at most longestBeat.
func TestOnline(t *testing.T) {
	for _, c := range []struct {
		every, ago time.Duration
		want       bool
	}{
		{0, 14 * time.Second, true},
		{0, 16 * time.Second, false},
		{5 * time.Second, 16 * time.Second, false},
		{15 * time.Second, 29 * time.Second, true},
		{15 * time.Second, 31 * time.Second, false},
		{24 * time.Hour, 11 * time.Minute, false},
	} {
		hb := subjects.HeartbeatMsg{Every: subjects.Duration(c.every)}
		if got := online(hb, time.Now().Add(-c.ago)); got != c.want {
			t.Errorf("every %v, last beat %v ago: online %v, want %v", c.every, c.ago, got, c.want)
		}
	}
}

// A scrape leaves out an agent past its online window, but keeps its last
// heartbeat for the lost-job check, which judges silence over longer.
func TestScrapeKeepsOfflineAgentsForTheLostJobCheck(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFleet(reg, time.Hour)
	hb := subjects.HeartbeatMsg{Agent: "agent-a", Tags: []string{"a"}, Running: []string{"j1"}, Every: subjects.Duration(5 * time.Second)}
	f.agents["agent-a"], f.seen["agent-a"] = hb, time.Now().Add(-time.Minute)
	f.agents["agent-b"], f.seen["agent-b"] = hb, time.Now().Add(-2*time.Hour)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == "outpost_agents" {
			t.Errorf("%d agents series for agents offline, want none", len(mf.GetMetric()))
		}
	}
	if _, _, known := f.last("agent-a"); !known {
		t.Error("a scrape forgot an agent silent for a minute, which the lost-job check still judges by")
	}
	if _, _, known := f.last("agent-b"); known {
		t.Error("an agent silent for longer than the fleet keeps it is still known")
	}
}
