package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/subjects"
)

// records keeps job records in the jobs bucket. Every change is a
// compare-and-set on the key's revision, so concurrent writers (the API and
// the event consumer, or two coordinators) never lose an update.
type records struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
	m  *metrics // observes every change of state; may be nil
	// live follows every record written or read back for a write.
	live *active
	// recent holds the records of unfinished jobs as last written here, so
	// that a change is one write, not a read and a write.
	recent *recent
}

var errNoRecord = errors.New("no such job")

// creating is the create of a new record, on its way.
type creating struct {
	r    records
	rec  subjects.Record
	size int
	ack  jetstream.PubAckFuture
}

// createAsync sends the create of a new record, and does not wait for it:
// wait does.
func (r records) createAsync(rec subjects.Record) (*creating, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	// What KeyValue.Create publishes: the key's subject, expected empty.
	m := &nats.Msg{Subject: "$KV." + r.kv.Bucket() + "." + rec.ID, Data: b}
	// Noted before anything of the job can be folded in: a later note,
	// an agent's report say, then replaces it, never the other way round.
	r.live.note(rec)
	f, err := r.js.PublishMsgAsync(m, jetstream.WithExpectLastSequencePerSubject(0))
	if err != nil {
		r.live.forget(rec.ID)
		return nil, fmt.Errorf("create record %s: %w", rec.ID, err)
	}
	return &creating{r: r, rec: rec, size: len(b), ack: f}, nil
}

// wait waits until the record is stored.
func (c *creating) wait(ctx context.Context) error {
	ack, err := pubAck(ctx, c.ack)
	if err != nil {
		c.r.live.forget(c.rec.ID)
		return fmt.Errorf("create record %s: %w", c.rec.ID, err)
	}
	// A report folded in meanwhile wrote a later revision, which stays.
	c.r.recent.put(c.rec, ack.Sequence, c.size)
	return nil
}

func (r records) get(ctx context.Context, id string) (subjects.Record, uint64, error) {
	rec, rev, err := getJSON[subjects.Record](ctx, r.kv, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, 0, errNoRecord
	}
	if err != nil {
		return rec, 0, fmt.Errorf("read record %s: %w", id, err)
	}
	return rec, rev, nil
}

// update applies change to the record and writes it back if change reports
// that it changed something.
//
// A record this coordinator wrote last is changed without reading it
// first: the write is a compare-and-set on the revision it wrote, so it
// fails if anyone wrote since, and then the record is read as usual. What
// is decided without a write (change reports no change) is decided on the
// record as read, never on the remembered one, which may be behind.
func (r records) update(ctx context.Context, id string, change func(*subjects.Record) bool) (subjects.Record, bool, error) {
	var before subjects.Record
	if rec, ok := r.updateRecent(ctx, id, change, &before); ok {
		r.done(before, rec)
		return rec, true, nil
	}
	rec, w, err := updateJSON(ctx, r.kv, id, func(rec *subjects.Record) (bool, error) {
		before = *rec
		return change(rec), nil
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		err = errNoRecord
	}
	changed := w.rev != 0
	switch {
	case changed:
		r.recent.put(rec, w.rev, w.size)
		r.done(before, rec)
	case err == nil:
		r.live.note(rec)
	default:
		r.recent.drop(id)
	}
	return rec, changed, err
}

// updateRecent writes change of the remembered record, if there is one,
// and reports whether that write was made; before gets the record as it
// was.
func (r records) updateRecent(ctx context.Context, id string, change func(*subjects.Record) bool, before *subjects.Record) (subjects.Record, bool) {
	rec, rev, ok := r.recent.get(id)
	if !ok {
		return rec, false
	}
	// change sets fields of the copy; it never writes through the
	// pointers and maps it shares with the remembered record.
	*before = rec
	if !change(&rec) {
		return rec, false
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return rec, false
	}
	rev, err = r.kv.Update(ctx, id, b, rev)
	if err != nil {
		// Written by someone else, or not at all: read it again.
		r.recent.drop(id)
		return rec, false
	}
	r.recent.put(rec, rev, len(b))
	return rec, true
}

// done follows a record this coordinator changed.
func (r records) done(before, after subjects.Record) {
	r.m.observe(before, after)
	r.live.note(after)
}

// list returns the records that keep says to keep, newest first, at most
// limit of them. It reads the whole bucket (see scanKV).
func (r records) list(ctx context.Context, keep func(*subjects.Record) bool, limit int) ([]subjects.Record, error) {
	var out []subjects.Record
	err := scanKV(ctx, r.js, r.kv, func(_ string, value []byte) {
		var rec subjects.Record
		if json.Unmarshal(value, &rec) == nil && keep(&rec) {
			out = append(out, rec)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list records: %w", err)
	}
	slices.SortFunc(out, func(a, b subjects.Record) int { return strings.Compare(b.ID, a.ID) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
