package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// scanKV calls fn with the current value of every key of kv, once each.
//
// A watcher's initial values are not enough: while it runs, the server
// skips a value that a newer one has replaced, and the newer one may come
// after the end-of-initial-values marker, so a key written during the scan
// (a credential's last seen time, a job's state) can be missing from it
// altogether. So the keys the bucket's stream holds once the scan is over
// are checked against what the scan gave, and any it missed are read
// directly. Keys gone by then (deleted, expired) are left out.
func scanKV(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, fn func(key string, value []byte)) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for e := range w.Updates() {
		if e == nil {
			break
		}
		seen[e.Key()] = true
		fn(e.Key(), e.Value())
	}
	_ = w.Stop()
	if err := ctx.Err(); err != nil {
		return err
	}
	prefix := "$KV." + kv.Bucket() + "."
	s, err := js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return err
	}
	for subj := range info.State.Subjects {
		key := strings.TrimPrefix(subj, prefix)
		if seen[key] {
			continue
		}
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			continue
		case err != nil:
			return fmt.Errorf("read %s: %w", key, err)
		}
		seen[key] = true
		fn(key, e.Value())
	}
	return nil
}

// getJSON reads key's JSON value and its revision.
func getJSON[T any](ctx context.Context, kv jetstream.KeyValue, key string) (T, uint64, error) {
	var v T
	e, err := kv.Get(ctx, key)
	if err != nil {
		return v, 0, err
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return v, e.Revision(), nil
}

// written is what updateJSON wrote: the value's new revision (0: nothing
// was written) and its size.
type written struct {
	rev  uint64
	size int
}

// updateJSON applies change to key's JSON value and writes it back with
// compare-and-set if change reports a change, retrying on a concurrent
// write, so concurrent writers (the API, the event consumer, another
// coordinator) never lose an update. An error from change ends it.
func updateJSON[T any](ctx context.Context, kv jetstream.KeyValue, key string, change func(*T) (bool, error)) (T, written, error) {
	for {
		v, rev, err := getJSON[T](ctx, kv, key)
		if err != nil {
			return v, written{}, err
		}
		if ok, err := change(&v); err != nil || !ok {
			return v, written{}, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return v, written{}, err
		}
		if rev, err = kv.Update(ctx, key, b, rev); err == nil {
			return v, written{rev, len(b)}, nil
		}
		if !wrongLastSequence(err) || ctx.Err() != nil {
			return v, written{}, fmt.Errorf("update %s: %w", key, err)
		}
	}
}

// wrongLastSequence reports whether err is the server refusing a write
// made on the condition of a subject's last sequence, which someone else
// changed (a replicated stream says so with a code of its own).
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
