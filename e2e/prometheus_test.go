package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/internal/testenv"
)

// prometheusTimeout bounds a wait for Prometheus to have scraped and
// evaluated what the test expects: agents beat every 5 s, and Prometheus
// scrapes and evaluates every second here.
const prometheusTimeout = 45 * time.Second

// TestPrometheus runs a real Prometheus with deploy/prometheus, its targets
// pointed at a running coordinator and agent and its intervals shortened,
// runs known jobs, and reads the figures back through Prometheus' HTTP
// API: jobs finished by state, queue depth, agents online, the targets up,
// and the no-agent alert pending for a tag whose jobs wait. promtool
// finds nothing to complain about in either /metrics.
func TestPrometheus(t *testing.T) {
	prometheusBin := requireTool(t, "prometheus", "the Debian package prometheus")
	promtool := requireTool(t, "promtool", "the Debian package prometheus")
	t.Parallel()
	c := startCoordinator(t, coordOptions{creds: []accounts.Request{
		{Name: "gpu-1", Role: accounts.RoleAgent, Tags: []string{"gpu"}},
		{Name: "arm-1", Role: accounts.RoleAgent, Tags: []string{"arm"}}, // never started
	}})
	agent := c.startAgent(t, "gpu-1", "--concurrency", "2", "--metrics-addr", "127.0.0.1:0")
	coordMetrics := logged(t, c.proc, "serving metrics and health")
	agentMetrics := logged(t, agent, "serving metrics and health")

	for _, cmd := range [][]string{{"echo", "one"}, {"echo", "two"}, {"sh", "-c", "exit 3"}} {
		id := c.admin.submit(t, append([]string{"--tag", "gpu", "--"}, cmd...)...)
		c.admin.waitState(t, id)
	}
	c.admin.waitState(t, c.admin.submit(t, "--tag", "local", "--", "true"))
	c.admin.submit(t, "--tag", "arm", "--", "true")

	p := startPrometheus(t, prometheusBin, map[string]string{
		`targets: ["127.0.0.1:9190"]`: `targets: ["` + coordMetrics + `"]`,
		`targets: ["127.0.0.1:9191"]`: `targets: ["` + agentMetrics + `"]`,
		"scrape_interval: 15s":        "scrape_interval: 1s",
		"evaluation_interval: 15s":    "evaluation_interval: 1s",
	})
	for _, q := range []struct {
		query, by string
		want      map[string]string
	}{
		{`up`, "job", map[string]string{"outpost-coordinator": "1", "outpost-agent": "1"}},
		{`sum by (state) (outpost_jobs_finished_total{job="outpost-coordinator",tag="gpu"})`, "state", map[string]string{"succeeded": "2", "failed": "1"}},
		{`sum by (tag) (outpost_jobs_finished_total{job="outpost-coordinator"})`, "tag", map[string]string{"gpu": "3", "local": "1"}},
		{`outpost_jobs_submitted_total{job="outpost-coordinator"}`, "tag", map[string]string{"gpu": "3", "local": "1", "arm": "1"}},
		{`outpost_queue_depth{job="outpost-coordinator"}`, "tag", map[string]string{"gpu": "0", "local": "0", "arm": "1"}},
		{`sum by (tag) (outpost_agents{job="outpost-coordinator"})`, "tag", map[string]string{"gpu": "1", "local": "1"}},
		{`outpost_job_run_duration_seconds_count{job="outpost-coordinator",tag="gpu"}`, "state", map[string]string{"succeeded": "2", "failed": "1"}},
		{`outpost_agent_slots_free{job="outpost-agent"}`, "job", map[string]string{"outpost-agent": "2"}},
		{`sum by (alertname, tag) (ALERTS{alertstate="pending"})`, "tag", map[string]string{"arm": "1"}},
		{`count by (alertname) (ALERTS)`, "alertname", map[string]string{"OutpostNoAgentForTag": "1"}},
	} {
		p.waitQuery(t, q.query, q.by, q.want)
	}
	p.waitRulesHealthy(t, 6)

	for name, addr := range map[string]string{"coordinator": coordMetrics, "agent": agentMetrics} {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(testenv.Get(t, "http://"+addr+"/metrics"))
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("promtool check metrics on the %s's /metrics: %v\n%s", name, err, out)
		}
	}
}

// logged waits for p to log msg with an addr attribute, as both binaries
// do once their metrics listener is bound, and returns the host:port.
func logged(t testing.TB, p *proc, msg string) string {
	t.Helper()
	re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(msg) + `" addr=http://(\S+)`)
	var addr string
	testenv.EventuallyWithin(t, startTimeout, p.name+" to log "+msg, func() bool {
		m := re.FindAllStringSubmatch(p.stderr.String(), -1)
		if len(m) == 0 {
			return false
		}
		addr = m[len(m)-1][1]
		return true
	})
	return addr
}

// prometheus is a running Prometheus server.
type prometheus struct {
	url string
}

// startPrometheus runs Prometheus on a copy of deploy/prometheus in which
// each key of subst, which must occur exactly once in prometheus.yml, is
// replaced by its value. The port Prometheus listens on can be taken
// between the choice and the bind, so a start that fails is retried.
func startPrometheus(t testing.TB, path string, subst map[string]string) *prometheus {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "prometheus")
	if err := os.CopyFS(dir, os.DirFS(deployPath(t, "prometheus"))); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "prometheus.yml")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for old, with := range subst {
		if n := strings.Count(s, old); n != 1 {
			t.Fatalf("deploy/prometheus/prometheus.yml holds %q %d times, want once: the test's rewrite is out of date", old, n)
		}
		s = strings.Replace(s, old, with, 1)
	}
	if err := os.WriteFile(conf, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
		srv := startProc(t, dir, baseEnv(), path, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+listen, "--log.level=warn")
		p := &prometheus{url: "http://" + listen}
		testenv.EventuallyWithin(t, startTimeout, "prometheus to be ready on "+listen, func() bool {
			return srv.exited() || p.ready()
		})
		if !srv.exited() {
			return p
		}
		t.Logf("prometheus could not start on %s; trying another port:\n%s", listen, tail(srv.stderr.String(), 10))
	}
	t.Fatal("prometheus did not start")
	return nil
}

func (p *prometheus) ready() bool {
	resp, err := http.Get(p.url + "/-/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// api GETs an endpoint of Prometheus' HTTP API and decodes its data.
func (p *prometheus) api(t testing.TB, path string, q url.Values, data any) {
	t.Helper()
	resp, err := http.Get(p.url + path + "?" + q.Encode())
	if err != nil {
		t.Fatalf("prometheus %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("prometheus %s: %v", path, err)
	}
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
		t.Fatalf("prometheus %s?%s: %v %s\n%s", path, q.Encode(), err, r.Error, body)
	}
	if err := json.NewDecoder(bytes.NewReader(r.Data)).Decode(data); err != nil {
		t.Fatalf("prometheus %s: data: %v\n%s", path, err, r.Data)
	}
}

// query runs an instant query whose result has one series per value of
// the label by, and returns each series' value by that label value.
func (p *prometheus) query(t testing.TB, query, by string) map[string]string {
	t.Helper()
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	p.api(t, "/api/v1/query", url.Values{"query": {query}}, &data)
	if data.ResultType != "vector" {
		t.Fatalf("query %s: result type %s, want vector", query, data.ResultType)
	}
	got := map[string]string{}
	for _, r := range data.Result {
		key := r.Metric[by]
		if _, dup := got[key]; dup {
			t.Fatalf("query %s: two series with %s=%q: aggregate by it", query, by, key)
		}
		got[key] = fmt.Sprint(r.Value[1])
	}
	return got
}

// waitQuery waits until query answers want, keyed by the label by.
func (p *prometheus) waitQuery(t testing.TB, query, by string, want map[string]string) {
	t.Helper()
	var got map[string]string
	defer func() {
		if t.Failed() {
			t.Logf("last answer to %s: %v; want %v", query, got, want)
		}
	}()
	testenv.EventuallyWithin(t, prometheusTimeout, "prometheus to answer "+query, func() bool {
		got = p.query(t, query, by)
		return maps.Equal(got, want)
	})
}

// waitRulesHealthy waits until Prometheus has loaded n rules and evaluated
// every one of them without an error.
func (p *prometheus) waitRulesHealthy(t testing.TB, n int) {
	t.Helper()
	var health map[string]string
	defer func() {
		if t.Failed() {
			t.Logf("rule health: %v", health)
		}
	}()
	testenv.EventuallyWithin(t, prometheusTimeout, fmt.Sprintf("prometheus to evaluate %d rules", n), func() bool {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		p.api(t, "/api/v1/rules", nil, &data)
		health = map[string]string{}
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				health[r.Name] = r.Health + r.LastError
			}
		}
		for _, h := range health {
			if h != "ok" {
				return false
			}
		}
		return len(health) == n
	})
}
