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
	return nil
}

func (r records) get(ctx context.Context, id string) (subjects.Record, uint64, error) {
	e, err := r.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return subjects.Record{}, 0, errNoRecord
	}
	if err != nil {
		return subjects.Record{}, 0, fmt.Errorf("read record %s: %w", id, err)
	}
	var rec subjects.Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return subjects.Record{}, 0, fmt.Errorf("decode record %s: %w", id, err)
	}
	return rec, e.Revision(), nil
}

// update applies change to the record and writes it back if change reports
// that it changed something, retrying on a concurrent write.
func (r records) update(ctx context.Context, id string, change func(*subjects.Record) bool) (subjects.Record, bool, error) {
	for {
		rec, rev, err := r.get(ctx, id)
		if err != nil {
			return rec, false, err
		}
		if !change(&rec) {
			return rec, false, nil
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return rec, false, err
		}
		_, err = r.kv.Update(ctx, id, b, rev)
		if err == nil {
			return rec, true, nil
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
			return rec, false, fmt.Errorf("update record %s: %w", id, err)
		}
		if ctx.Err() != nil {
			return rec, false, ctx.Err()
		}
	}
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
