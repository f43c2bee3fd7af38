package agent

import (
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// stats are the agent's running totals, read by its heartbeat and metrics.
type stats struct {
	lines, bytes, retries atomic.Uint64
	// lost counts lines dropped because the output buffer was full.
	lost atomic.Uint64
	// ended counts jobs handed over again after they had ended, and so
	// acked without running.
	ended atomic.Uint64
}

// Register adds the agent's metrics to reg: slots used and free, log lines
// and bytes published, publish retries, ended jobs skipped and reconnects.
func (a *Agent) Register(reg prometheus.Registerer) error {
	used := func() float64 { return float64(len(a.slots)) }
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_agent_slots_used", Help: "Job slots in use: jobs whose process runs (a job whose end is being stored has given its slot up)."}, used),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_agent_slots_free", Help: "Job slots free."}, func() float64 { return float64(cap(a.slots)) - used() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_agent_log_lines_total", Help: "Log lines published."}, func() float64 { return float64(a.stats.lines.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_agent_log_bytes_total", Help: "Log bytes published."}, func() float64 { return float64(a.stats.bytes.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_agent_log_lines_lost_total", Help: "Log lines dropped because NATS was out of reach and the output buffer was full."}, func() float64 { return float64(a.stats.lost.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_agent_publish_retries_total", Help: "Status and log publishes retried after a failure."}, func() float64 { return float64(a.stats.retries.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_agent_ended_jobs_skipped_total", Help: "Jobs delivered again after they had ended (a server that restarted lost their acks), acked without running."}, func() float64 { return float64(a.stats.ended.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_agent_reconnects_total", Help: "Reconnections to NATS."}, func() float64 { return float64(a.conn.Stats().Reconnects) }),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("agent metrics: %w", err)
		}
	}
	return nil
}

// Handler serves /metrics from reg and /healthz, which fails while the
// agent is not connected to NATS.
func (a *Agent) Handler(reg prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.conn.IsConnected() {
			http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
