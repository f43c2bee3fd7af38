package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

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
	// live follows every record written or read back for a write; may be nil.
	live *active
}

var errNoRecord = errors.New("no such job")

func (r records) create(ctx context.Context, rec subjects.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := r.kv.Create(ctx, rec.ID, b); err != nil {
		return fmt.Errorf("create record %s: %w", rec.ID, err)
	}
	r.live.note(rec)
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
func (r records) update(ctx context.Context, id string, change func(*subjects.Record) bool) (subjects.Record, bool, error) {
	var before subjects.Record
	rec, changed, err := updateJSON(ctx, r.kv, id, func(rec *subjects.Record) (bool, error) {
		before = *rec
		return change(rec), nil
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		err = errNoRecord
	}
	if changed {
		r.m.observe(before, rec)
	}
	if err == nil {
		r.live.note(rec)
	}
	return rec, changed, err
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
