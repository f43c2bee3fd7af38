package coordinator

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/subjects"
)

// bareCoordinator is a coordinator on a plain JetStream server (no
// accounts), with the jobs bucket alone: enough to fold events into
// records.
func bareCoordinator(t *testing.T) (*Coordinator, jetstream.KeyValue) {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: subjects.JobsBucket})
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics(prometheus.NewRegistry())
	c := &Coordinator{conn: &client.Conn{Conn: nc, JS: js}, js: js, log: slog.New(slog.DiscardHandler), m: m,
		jobs: records{kv: kv, js: js, m: m, live: newActive(), recent: newRecent()}}
	return c, kv
}

// delivered is a status event as the coordinator's consumer hands it over.
type delivered struct {
	jetstream.Msg
	subject string
	data    []byte
	times   uint64 // times delivered; 0 counts as 1

	mu           sync.Mutex
	acked, naked bool
}

func (d *delivered) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: max(d.times, 1)}, nil
}

func (d *delivered) Subject() string { return d.subject }
func (d *delivered) Data() []byte    { return d.data }
func (d *delivered) Ack() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.acked = true
	return nil
}

func (d *delivered) NakWithDelay(time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.naked = true
	return nil
}

func statusEvent(t *testing.T, rec subjects.Record, state subjects.State, attempt int) event {
	t.Helper()
	b, err := json.Marshal(subjects.StatusEvent{Job: rec.ID, State: state, Attempt: attempt, Agent: "agent-a", At: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	e, ok := (&Coordinator{}).checkEvent(&delivered{subject: subjects.EventSubject(rec.Tag, rec.Owner, rec.ID, subjects.KindStatus), data: b})
	if !ok {
		t.Fatalf("event %s rejected", state)
	}
	return e
}

func newRecord(t *testing.T, c *Coordinator, id string) subjects.Record {
	t.Helper()
	rec := subjects.Record{Job: subjects.Job{ID: id, Owner: "alice", Attempt: 1, SubmittedAt: time.Now().UTC(),
		JobSpec: subjects.JobSpec{Tag: "a", Command: []string{"true"}, MaxAttempts: 3}}, State: subjects.StateQueued}
	created, err := c.jobs.createAsync(rec)
	if err == nil {
		err = created.wait(t.Context())
	}
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func revision(t *testing.T, kv jetstream.KeyValue, id string) (subjects.Record, uint64) {
	t.Helper()
	rec, rev, err := getJSON[subjects.Record](t.Context(), kv, id)
	if err != nil {
		t.Fatal(err)
	}
	return rec, rev
}

// A job's running status and its end, applied together, are one write of
// its record, which reads as if each had been applied; both are acked.
func TestEventsFoldIntoOneWrite(t *testing.T) {
	c, kv := bareCoordinator(t)
	rec := newRecord(t, c, "01jd7x3k9q8r6t5v4w3y2z1a0b")
	_, created := revision(t, kv, rec.ID)
	events := []event{statusEvent(t, rec, subjects.StateRunning, 1), statusEvent(t, rec, subjects.StateSucceeded, 1)}
	c.applyEvents(t.Context(), events)
	got, rev := revision(t, kv, rec.ID)
	if got.State != subjects.StateSucceeded || got.StartedAt == nil || got.FinishedAt == nil || got.Agent != "agent-a" {
		t.Errorf("record %+v", got)
	}
	if rev != created+1 {
		t.Errorf("the record was written %d times, want once", rev-created)
	}
	for _, e := range events {
		if d := e.m.(*delivered); !d.acked || d.naked {
			t.Errorf("event %s: acked %v, naked %v", e.ev.State, d.acked, d.naked)
		}
	}
	if left := c.left.take(); len(left) != 1 || left[0].ID != rec.ID {
		t.Errorf("ended jobs to look for: %v", left)
	}
	if _, _, ok := c.jobs.recent.get(rec.ID); ok {
		t.Error("an ended job's record is still remembered")
	}
}

// A job's running status may come before its record is stored (the
// submit sends both at once): it is delivered again until the record is
// there, and dropped only once the job's ID is long past its submit.
func TestEventBeforeItsRecord(t *testing.T) {
	c, kv := bareCoordinator(t)
	rec := subjects.Record{Job: subjects.Job{ID: strings.ToLower(ulid.Make().String()), Owner: "alice", Attempt: 1,
		JobSpec: subjects.JobSpec{Tag: "a", MaxAttempts: 3}}, State: subjects.StateQueued}
	early := statusEvent(t, rec, subjects.StateRunning, 1)
	c.applyEvents(t.Context(), []event{early})
	if d := early.m.(*delivered); d.acked || !d.naked {
		t.Fatalf("an event before its record: acked %v, naked %v; want it delivered again", d.acked, d.naked)
	}
	newRecord(t, c, rec.ID)
	again := statusEvent(t, rec, subjects.StateRunning, 1)
	again.m.(*delivered).times = 2
	c.applyEvents(t.Context(), []event{again})
	if got, _ := revision(t, kv, rec.ID); got.State != subjects.StateRunning || !again.m.(*delivered).acked {
		t.Errorf("record %s once the event came again", got.State)
	}
	// Submitted in 2024, by its ID.
	ghost := statusEvent(t, subjects.Record{Job: subjects.Job{ID: "01jd7x3k9q8r6t5v4w3y2z1a0e", Owner: "alice", JobSpec: subjects.JobSpec{Tag: "a"}}}, subjects.StateRunning, 1)
	c.applyEvents(t.Context(), []event{ghost})
	if d := ghost.m.(*delivered); !d.acked || d.naked {
		t.Errorf("an event of a job that never had a record: acked %v, naked %v; want it dropped", d.acked, d.naked)
	}
}

// A record written by someone else since this coordinator last wrote it
// is read again, not overwritten with what this coordinator remembers.
func TestRecordWrittenElsewhereIsReadAgain(t *testing.T) {
	c, kv := bareCoordinator(t)
	rec := newRecord(t, c, "01jd7x3k9q8r6t5v4w3y2z1a0c")
	ctx := t.Context()
	// Another coordinator asks the job to stop.
	other := rec
	other.StopRequested = true
	b, _ := json.Marshal(other)
	_, rev := revision(t, kv, rec.ID)
	if _, err := kv.Update(ctx, rec.ID, b, rev); err != nil {
		t.Fatal(err)
	}
	stops, err := c.conn.SubscribeSync(subjects.ControlSubject("a", rec.ID))
	if err != nil {
		t.Fatal(err)
	}
	c.applyEvents(ctx, []event{statusEvent(t, rec, subjects.StateRunning, 1)})
	if got, _ := revision(t, kv, rec.ID); got.State != subjects.StateRunning || !got.StopRequested {
		t.Errorf("record %s, stop requested %v; want running, and the stop kept", got.State, got.StopRequested)
	}
	// The job was asked to stop before it started: its agent is told.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := stops.NextMsgWithContext(ctx); err != nil {
		t.Errorf("no stop sent: %v", err)
	}
}

// What is remembered is bounded, and ended jobs are forgotten.
func TestRecentBounds(t *testing.T) {
	r := newRecent()
	rec := func(id string, state subjects.State) subjects.Record {
		return subjects.Record{Job: subjects.Job{ID: id}, State: state}
	}
	r.put(rec("big", subjects.StateQueued), 1, recentMaxSize+1)
	r.put(rec("done", subjects.StateSucceeded), 1, 100)
	for _, id := range []string{"big", "done"} {
		if _, _, ok := r.get(id); ok {
			t.Errorf("%s is remembered", id)
		}
	}
	for i := range recentMaxRecs + 10 {
		r.put(rec(string(rune('a'+i%26))+time.Duration(i).String(), subjects.StateQueued), 1, 10)
	}
	if len(r.recs) != recentMaxRecs || r.bytes != 10*recentMaxRecs {
		t.Errorf("%d records of %d bytes remembered, want at most %d", len(r.recs), r.bytes, recentMaxRecs)
	}
	r.put(rec("a0s", subjects.StateSucceeded), 2, 10)
	if _, _, ok := r.get("a0s"); ok || r.bytes != 10*(recentMaxRecs-1) {
		t.Errorf("an ended job is still remembered, or its bytes still counted (%d)", r.bytes)
	}
	// Those the view of unfinished jobs no longer holds are forgotten.
	r.retain(func(id string) bool { return id == "b1ns" })
	if _, _, ok := r.get("b1ns"); !ok || len(r.recs) != 1 || r.bytes != 10 {
		t.Errorf("after retain: %d records of %d bytes", len(r.recs), r.bytes)
	}
}
