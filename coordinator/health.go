package coordinator

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outpost-run/outpost/subjects"
)

// Ready reports whether JetStream answers and Outpost's streams exist.
func (c *Coordinator) Ready(ctx context.Context) error {
	for _, name := range []string{subjects.JobsStream, subjects.EventsStream, subjects.AuditStream} {
		if _, err := c.js.Stream(ctx, name); err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
	}
	if _, err := c.js.Consumer(ctx, subjects.EventsStream, subjects.CoordinatorConsumer); err != nil {
		return fmt.Errorf("consumer %s: %w", subjects.CoordinatorConsumer, err)
	}
	return nil
}

// Handler serves /metrics from reg, /healthz (the process answers) and
// /readyz (JetStream answers and the streams exist).
func (c *Coordinator) Handler(reg prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := c.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}
