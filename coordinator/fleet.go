package coordinator

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/subjects"
)

// onlineFor is how long after its last heartbeat an agent counts as online,
// at least: three of a working agent's 5 s beats. An idle agent beats less
// often (its heartbeat says how often at most), and counts as online for
// two of its beats, so that one lost beat does not take it off the list.
const onlineFor = 15 * time.Second

// longestBeat bounds the gap between beats an agent may announce, so that
// one that says it beats once a year is not listed for two years after it
// died.
const longestBeat = 5 * time.Minute

// online reports whether an agent whose last heartbeat was hb, seen at
// seen, still counts as online.
func online(hb subjects.HeartbeatMsg, seen time.Time) bool {
	return time.Since(seen) <= max(onlineFor, 2*min(time.Duration(hb.Every), longestBeat))
}

// fleet is what the agents' heartbeats say: who is online, on which tags,
// and how busy. It is telemetry, rebuilt within one beat after a restart
// (15 s for an idle agent), never a record of anything.
type fleet struct {
	mu     sync.Mutex
	agents map[string]subjects.HeartbeatMsg
	seen   map[string]time.Time
	// keep is how long an agent's last heartbeat is kept after it went
	// offline: the lost-job check judges a silent agent by it, over a
	// longer time than the online window, which it outlasts.
	keep time.Duration

	// lines and bytes are the agents' log output so far, counted here
	// and shown together, under mu: a scrape never sees a heartbeat's
	// lines without its bytes.
	lines, bytes           float64
	online, linesD, bytesD *prometheus.Desc
}

func newFleet(reg prometheus.Registerer, keep time.Duration) *fleet {
	f := &fleet{
		agents: map[string]subjects.HeartbeatMsg{}, seen: map[string]time.Time{}, keep: max(keep, 2*longestBeat),
		online: prometheus.NewDesc("outpost_agents", "Agents online, by tag and state (idle or busy).", []string{"tag", "state"}, nil),
		linesD: prometheus.NewDesc("outpost_log_lines_total", "Log lines the agents published, as their heartbeats report.", nil, nil),
		bytesD: prometheus.NewDesc("outpost_log_bytes_total", "Log bytes the agents published, as their heartbeats report.", nil, nil),
	}
	reg.MustRegister(f)
	return f
}

// beat takes one heartbeat. Only the agent itself can publish on its
// subject, but the body must agree with the subject all the same.
func (f *fleet) beat(m *nats.Msg) {
	tag, name, err := subjects.ParseHeartbeat(m.Subject)
	if err != nil {
		return
	}
	var hb subjects.HeartbeatMsg
	if json.Unmarshal(m.Data, &hb) != nil || hb.Agent != name || !slices.Contains(hb.Tags, tag) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	prev, known := f.agents[name]
	// Counters restart with the agent process; count on from zero then.
	if !known || hb.Lines < prev.Lines || hb.Bytes < prev.Bytes {
		prev.Lines, prev.Bytes = 0, 0
	}
	f.lines += float64(hb.Lines - prev.Lines)
	f.bytes += float64(hb.Bytes - prev.Bytes)
	f.agents[name], f.seen[name] = hb, time.Now()
}

// last returns the agent's last heartbeat and when it came.
func (f *fleet) last(name string) (subjects.HeartbeatMsg, time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hb, ok := f.agents[name]
	return hb, f.seen[name], ok
}

func (f *fleet) Describe(ch chan<- *prometheus.Desc) {
	ch <- f.online
	ch <- f.linesD
	ch <- f.bytesD
}

func (f *fleet) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(f.linesD, prometheus.CounterValue, f.lines)
	ch <- prometheus.MustNewConstMetric(f.bytesD, prometheus.CounterValue, f.bytes)
	type counts struct{ idle, busy int }
	byTag := map[string]*counts{}
	for name, hb := range f.agents {
		if !online(hb, f.seen[name]) {
			if time.Since(f.seen[name]) > f.keep {
				delete(f.agents, name)
				delete(f.seen, name)
			}
			continue
		}
		for _, t := range hb.Tags {
			c := byTag[t]
			if c == nil {
				c = &counts{}
				byTag[t] = c
			}
			if len(hb.Running) > 0 {
				c.busy++
			} else {
				c.idle++
			}
		}
	}
	// Both states of a tag are shown, zero included, so a query for busy
	// agents sees a 0 rather than no series.
	for t, c := range byTag {
		ch <- prometheus.MustNewConstMetric(f.online, prometheus.GaugeValue, float64(c.idle), t, "idle")
		ch <- prometheus.MustNewConstMetric(f.online, prometheus.GaugeValue, float64(c.busy), t, "busy")
	}
}

// keys lists the online agents of tag that announced a curve key, by name.
func (f *fleet) keys(tag string) []subjects.AgentKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []subjects.AgentKey{}
	for name, hb := range f.agents {
		if online(hb, f.seen[name]) && hb.XKey != "" && slices.Contains(hb.Tags, tag) {
			out = append(out, subjects.AgentKey{Name: name, XKey: hb.XKey})
		}
	}
	slices.SortFunc(out, func(a, b subjects.AgentKey) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// agentKeys answers an agents request: the online agents of a tag the
// caller may submit to, with the keys to seal its secrets to.
func (c *Coordinator) agentKeys(who caller, req subjects.AgentsRequest) ([]subjects.AgentKey, error) {
	if err := subjects.ValidTag(req.Tag); err != nil {
		return nil, subjects.Errorf(subjects.CodeBadRequest, "%v", err)
	}
	if who.role != accounts.RoleAdmin && (who.role != accounts.RoleUser || !who.hasTag(req.Tag)) {
		return nil, forbidden(who, "list the agents of tag "+req.Tag)
	}
	return c.fleet.keys(req.Tag), nil
}
