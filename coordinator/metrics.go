package coordinator

import (
	"context"
	"errors"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/outpost-run/outpost/subjects"
)

// metrics are the coordinator's own counters and histograms. Labels are
// bounded sets (tag, state, verb, result, role), never IDs.
type metrics struct {
	submitted   *prometheus.CounterVec
	finished    *prometheus.CounterVec
	api         *prometheus.CounterVec
	queueWait   *prometheus.HistogramVec
	runDuration *prometheus.HistogramVec
	issued      *prometheus.CounterVec
	revoked     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	buckets := prometheus.ExponentialBuckets(0.005, 4, 12) // 5 ms to about 5 h
	m := &metrics{
		submitted:   f.NewCounterVec(prometheus.CounterOpts{Name: "outpost_jobs_submitted_total", Help: "Jobs accepted by the coordinator."}, []string{"tag"}),
		finished:    f.NewCounterVec(prometheus.CounterOpts{Name: "outpost_jobs_finished_total", Help: "Jobs that reached a terminal state."}, []string{"tag", "state"}),
		api:         f.NewCounterVec(prometheus.CounterOpts{Name: "outpost_api_requests_total", Help: "API requests answered, by verb and result (ok or an error code)."}, []string{"verb", "result"}),
		queueWait:   f.NewHistogramVec(prometheus.HistogramOpts{Name: "outpost_job_queue_wait_seconds", Help: "Time from submit to the start of a job's first attempt.", Buckets: buckets}, []string{"tag"}),
		runDuration: f.NewHistogramVec(prometheus.HistogramOpts{Name: "outpost_job_run_duration_seconds", Help: "Time from start to end of the attempt that finished a job.", Buckets: buckets}, []string{"tag", "state"}),
		issued:      f.NewCounterVec(prometheus.CounterOpts{Name: "outpost_credentials_issued_total", Help: "Credentials issued through the API."}, []string{"role"}),
		revoked:     f.NewCounterVec(prometheus.CounterOpts{Name: "outpost_credentials_revoked_total", Help: "Credentials revoked."}, []string{"role"}),
	}
	version, goVersion := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		version, goVersion = bi.Main.Version, bi.GoVersion
	}
	f.NewGaugeVec(prometheus.GaugeOpts{Name: "outpost_build_info", Help: "The coordinator's build; always 1."}, []string{"version", "goversion"}).
		WithLabelValues(version, goVersion).Set(1)
	return m
}

// observe counts a record's change of state.
func (m *metrics) observe(before, after subjects.Record) {
	if before.State == after.State {
		return
	}
	// One change may take a job from queued to its end, its running status
	// folded into it (see holdRunning): it started all the same.
	if before.StartedAt == nil && after.StartedAt != nil && after.Attempt == 1 {
		m.queueWait.WithLabelValues(after.Tag).Observe(after.StartedAt.Sub(after.SubmittedAt).Seconds())
	}
	if after.State.Terminal() {
		m.finished.WithLabelValues(after.Tag, string(after.State)).Inc()
		if after.StartedAt != nil && after.FinishedAt != nil {
			m.runDuration.WithLabelValues(after.Tag, string(after.State)).Observe(after.FinishedAt.Sub(*after.StartedAt).Seconds())
		}
	}
}

// queueCollector reads, at scrape time, each tag's queue from its consumer:
// jobs waiting, jobs delivered and not yet acked (running), and the age of
// the oldest job no agent has taken yet.
type queueCollector struct {
	js      jetstream.JetStream
	tags    *sync.Map
	depth   *prometheus.Desc
	running *prometheus.Desc
	oldest  *prometheus.Desc
	up      *prometheus.Desc
}

func newQueueCollector(js jetstream.JetStream, tags *sync.Map) *queueCollector {
	return &queueCollector{
		js: js, tags: tags,
		depth:   prometheus.NewDesc("outpost_queue_depth", "Jobs waiting for an agent, by tag.", []string{"tag"}, nil),
		running: prometheus.NewDesc("outpost_jobs_running", "Jobs delivered to an agent and not yet finished, by tag.", []string{"tag"}, nil),
		oldest:  prometheus.NewDesc("outpost_queue_oldest_age_seconds", "Age of the oldest job waiting for an agent, by tag (0 when none waits).", []string{"tag"}, nil),
		up:      prometheus.NewDesc("outpost_jetstream_up", "Whether the coordinator could read the queues from JetStream at the scrape.", nil, nil),
	}
}

func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- q.depth
	ch <- q.running
	ch <- q.oldest
	ch <- q.up
}

func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	up := 1.0
	stream, err := q.js.Stream(ctx, subjects.JobsStream)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(q.up, prometheus.GaugeValue, 0)
		return
	}
	q.tags.Range(func(k, _ any) bool {
		tag := k.(string)
		cons, err := q.js.Consumer(ctx, subjects.JobsStream, subjects.AgentsConsumer(tag))
		if err != nil {
			up = 0
			return true
		}
		info := cons.CachedInfo()
		age := 0.0
		if info.NumPending > 0 {
			m, err := stream.GetMsg(ctx, info.Delivered.Stream+1, jetstream.WithGetMsgSubject(subjects.JobsFilter(tag)))
			if err == nil {
				age = time.Since(m.Time).Seconds()
			} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
				up = 0
			}
		}
		ch <- prometheus.MustNewConstMetric(q.depth, prometheus.GaugeValue, float64(info.NumPending), tag)
		ch <- prometheus.MustNewConstMetric(q.running, prometheus.GaugeValue, float64(info.NumAckPending), tag)
		ch <- prometheus.MustNewConstMetric(q.oldest, prometheus.GaugeValue, age, tag)
		return true
	})
	ch <- prometheus.MustNewConstMetric(q.up, prometheus.GaugeValue, up)
}
