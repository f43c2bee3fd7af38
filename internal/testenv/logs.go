package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// Entry is one log record, with its attributes flattened to strings.
type Entry struct {
	Time  time.Time
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func (en Entry) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %q", en.Time.Format("15:04:05.000"), en.Level, en.Msg)
	for k, v := range en.Attrs {
		fmt.Fprintf(&b, " %s=%q", k, v)
	}
	return b.String()
}

// Logs records what the parts started by an Env log, so that a test can
// wait for a part to have done something it says it did ("ignored control
// message") instead of waiting for a fixed time.
type Logs struct {
	mu      sync.Mutex
	entries []Entry
	changed chan struct{} // closed and replaced on every new entry
}

// Logger returns a logger that records into l, at every level.
func (l *Logs) Logger() *slog.Logger { return slog.New(&handler{logs: l}) }

// Len is the number of entries so far: a mark to pass to Wait.
func (l *Logs) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// Find returns the first entry from mark on that match accepts.
func (l *Logs) Find(mark int, match func(Entry) bool) (Entry, bool) {
	en, ok, _ := l.find(mark, match)
	return en, ok
}

func (l *Logs) find(mark int, match func(Entry) bool) (Entry, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, en := range l.entries[min(mark, len(l.entries)):] {
		if match(en) {
			return en, true, nil
		}
	}
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return Entry{}, false, l.changed
}

// Count is the number of entries from mark on that match accepts.
func (l *Logs) Count(mark int, match func(Entry) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, en := range l.entries[min(mark, len(l.entries)):] {
		if match(en) {
			n++
		}
	}
	return n
}

// Wait returns the first entry from mark on that match accepts, waiting
// for it up to Timeout.
func (l *Logs) Wait(t testing.TB, mark int, what string, match func(Entry) bool) Entry {
	t.Helper()
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	for {
		en, ok, changed := l.find(mark, match)
		if ok {
			return en
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for a log entry: %s", Timeout, what)
		}
	}
}

// Dump writes every entry to the test log.
func (l *Logs) Dump(t testing.TB) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, en := range l.entries {
		t.Log(en.String())
	}
}

func (l *Logs) add(en Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, en)
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}

type handler struct {
	logs   *Logs
	attrs  []slog.Attr
	prefix string
}

func (h *handler) Enabled(context.Context, slog.Level) bool { return true }

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	en := Entry{Time: r.Time, Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		flatten(en.Attrs, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		flatten(en.Attrs, h.prefix, a)
		return true
	})
	h.logs.add(en)
	return nil
}

func flatten(dst map[string]string, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		for _, g := range v.Group() {
			flatten(dst, prefix+a.Key+".", g)
		}
		return
	}
	dst[prefix+a.Key] = v.String()
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if h.prefix != "" {
			a.Key = h.prefix + a.Key
		}
		n.attrs = append(n.attrs, a)
	}
	return &n
}

func (h *handler) WithGroup(name string) slog.Handler {
	n := *h
	n.prefix = h.prefix + name + "."
	return &n
}
