package agent

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/subjects"
)

// linger is how long a log message waits for more lines before it is sent:
// short enough that a follower sees a chatty job's lines promptly, long
// enough that they share messages. A line after a quiet spell at least as
// long goes at once, with whatever else is already waiting: it is what a
// follower waits for, and nothing would join it.
const linger = 5 * time.Millisecond

// lineQueue is how many lines wait between a job's output readers and its
// batcher: enough that a chatty job's readers seldom wait. Each run makes
// its queue, and one of 1024 lines (48 KiB) was a third of what an agent
// allocated for a trivial job.
const lineQueue = 128

// line is one line (or one chunk of an over-long line) of job output.
type line struct {
	stream  string
	text    []byte // without the trailing newline
	partial bool   // the line goes on in the next chunk
}

// newLineReader is a reader of job output for readLines, whose buffer
// holds the longest line sent whole.
func newLineReader() *bufio.Reader { return bufio.NewReaderSize(nil, subjects.MaxLine) }

// readLines sends the lines br reads to out until its reader ends. Lines
// longer than subjects.MaxLine are cut into chunks marked partial, never
// dropped. What it sends is copied: br may read for another job next.
func readLines(br *bufio.Reader, stream string, out chan<- line) {
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			full := len(b) > 0 && b[len(b)-1] == '\n'
			text := b
			if full {
				text = b[:len(b)-1]
			}
			partial := !full && errors.Is(err, bufio.ErrBufferFull)
			out <- line{stream: stream, text: append([]byte(nil), text...), partial: partial}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// budget bounds the output an agent holds that is not stored yet: lines
// read from its jobs whose messages JetStream has not acknowledged. While
// the link to NATS is down that is everything the jobs print, and once it
// is spent lines are dropped, and counted, rather than stall the jobs.
type budget struct {
	max   int64
	used  atomic.Int64
	freed chan struct{} // signalled when bytes are given back
}

// take reserves n bytes if that keeps the total within limit.
func (b *budget) take(n, limit int64) bool {
	for {
		u := b.used.Load()
		if u+n > limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// force reserves n bytes whatever the limit: for a marker line, which must
// not itself be lost.
func (b *budget) force(n int64) { b.used.Add(n) }

func (b *budget) give(n int64) {
	b.used.Add(-n)
	select {
	case b.freed <- struct{}{}:
	default:
	}
}

// wait returns once some bytes were given back, or after d.
func (b *budget) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-b.freed:
	case <-t.C:
	}
}

func newBudget(max int64) *budget { return &budget{max: max, freed: make(chan struct{}, 1)} }

// batcher groups lines into log messages: consecutive lines of one stream,
// flushed when the stream changes, when a chunk is partial, when the size
// cap is reached, or after the linger. Lines are numbered from 1 in the
// order read, across both streams, so each message is a run of numbers.
// It never waits for the publisher: a job's output is read as fast as the
// job writes it, whether NATS is reachable or not.
type batcher struct {
	subject string
	job     string
	attempt int
	pub     *publisher
	room    *budget
	stats   *stats // may be nil
	// limit is the most output bytes sent for the attempt; past it lines are
	// counted, not sent, and one marker line on stderr says so at the end.
	limit   int64
	sent    int64
	dropped int
	// lost and lostBytes count the lines dropped because the budget was
	// spent; a marker line says so once it has room again.
	lost, lostBytes int64

	next    int // number of the next line
	first   int // number of the buffered message's first line
	strm    string
	buf     []byte
	timer   *time.Timer
	flushed time.Time   // when the last message was sent
	in      <-chan line // the lines still to come
	// linger is how long a message waits for more lines; zero means the
	// package's linger (tests set their own).
	linger time.Duration
}

// run batches lines from in until it closes, then flushes the rest and
// closes the publisher.
func (b *batcher) run(in <-chan line) {
	defer b.pub.close()
	b.next = 1
	b.in = in
	b.linger = cmp.Or(b.linger, linger)
	b.timer = time.NewTimer(time.Hour)
	b.timer.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			// A quiet job's loss is reported as soon as there is room again.
			if b.lost > 0 {
				b.resume(0)
			}
		case l, ok := <-in:
			if !ok {
				if b.lost > 0 {
					b.markLoss()
				}
				b.flush(false)
				b.markTruncation()
				return
			}
			if b.dropped > 0 || (b.limit > 0 && b.sent+int64(len(l.text))+1 > b.limit) {
				b.dropped++
				continue
			}
			b.sent += int64(len(l.text)) + 1
			b.keep(l)
		case <-b.timer.C:
			b.flush(false)
		}
	}
}

// keep adds l to the output when the budget has room for it. When it has
// none and the link is up, NATS is only slower than the job: keep waits,
// and the job, its pipe full, with it. When the link is down, l is counted
// lost, and after a loss output resumes only once the budget is half free,
// with a marker line first, so that a buffer hovering at its bound does
// not alternate between one kept and one lost line.
func (b *batcher) keep(l line) {
	n := int64(len(l.text)) + 1
	for {
		if b.lost == 0 && b.room.take(n, b.room.max) || b.lost > 0 && b.resume(n) {
			b.add(l)
			return
		}
		if !b.pub.connected() {
			b.lost++
			b.lostBytes += n
			if b.stats != nil {
				b.stats.lost.Add(1)
			}
			return
		}
		// What this job holds back must be on its way, or jobs could wait
		// for one another's room.
		b.flush(false)
		b.room.wait(50 * time.Millisecond)
	}
}

// resume queues the marker of the lost lines if the budget, half free, has
// room for it and n bytes more, which it reserves too.
func (b *batcher) resume(n int64) bool {
	marker := b.lossMarker()
	if !b.room.take(int64(len(marker))+1+n, b.room.max/2) {
		return false
	}
	b.add(line{stream: subjects.StreamStderr, text: marker})
	b.lost, b.lostBytes = 0, 0
	return true
}

// markLoss queues the marker of the lost lines at the end of the job, when
// there is no later moment to wait for.
func (b *batcher) markLoss() {
	marker := b.lossMarker()
	b.room.force(int64(len(marker)) + 1)
	b.add(line{stream: subjects.StreamStderr, text: marker})
	b.lost, b.lostBytes = 0, 0
}

func (b *batcher) lossMarker() []byte {
	return fmt.Appendf(nil, "[outpost: %d lines (%d bytes) of output were lost: NATS was out of reach and the agent's buffer of %d bytes was full]", b.lost, b.lostBytes, b.room.max)
}

// add appends a line whose bytes are reserved to the message being built.
func (b *batcher) add(l line) {
	if len(b.buf) > 0 && (l.stream != b.strm || len(b.buf)+len(l.text)+1 > subjects.MaxLogMsg) {
		b.flush(false)
	}
	quiet := false
	if len(b.buf) == 0 {
		b.first, b.strm = b.next, l.stream
		b.timer.Reset(b.linger)
		quiet = time.Since(b.flushed) >= b.linger
	}
	b.buf = append(append(b.buf, l.text...), '\n')
	b.next++
	switch {
	case l.partial:
		b.flush(true)
	case quiet && len(b.in) == 0:
		b.flush(false)
	}
}

// markTruncation adds, after the last line sent, one line on stderr saying
// how much output the limit held back, so a reader never mistakes a cut
// log for a whole one.
func (b *batcher) markTruncation() {
	if b.dropped == 0 {
		return
	}
	marker := fmt.Appendf(nil, "[outpost: output truncated at %d bytes; %d more lines were not kept]", b.limit, b.dropped)
	b.room.force(int64(len(marker)) + 1)
	b.add(line{stream: subjects.StreamStderr, text: marker})
	b.flush(false)
}

func (b *batcher) flush(partial bool) {
	if len(b.buf) == 0 {
		return
	}
	m := nats.NewMsg(b.subject)
	m.Data = b.buf
	m.Header.Set(subjects.HeaderStream, b.strm)
	m.Header.Set(subjects.HeaderAttempt, strconv.Itoa(b.attempt))
	m.Header.Set(subjects.HeaderSeq, strconv.Itoa(b.first))
	m.Header.Set(subjects.HeaderMsgID, subjects.MsgID(b.job, b.attempt, strconv.Itoa(b.first)))
	if partial {
		m.Header.Set(subjects.HeaderPartial, "1")
	}
	b.pub.publish(m)
	b.flushed = time.Now()
	if b.stats != nil {
		// Bytes first, and a heartbeat reads lines first: one that counts
		// a message's lines counts its bytes too.
		b.stats.bytes.Add(uint64(len(b.buf)))
		b.stats.lines.Add(uint64(bytes.Count(b.buf, []byte{'\n'})))
	}
	b.buf = nil
}

// window is how many log messages may await their ack at once.
const window = 256

// publisher sends a job's log messages in order, from a queue the batcher
// fills, at most window unacknowledged at a time. It holds back while the
// connection is down, and republishes, in order, any message whose ack
// failed (a dropped connection, a timeout): Nats-Msg-Id makes a republish
// of a message that was in fact stored a no-op, so nothing is lost and
// nothing shows twice. A message's bytes go back to the budget once stored.
type publisher struct {
	js        jetstream.JetStream
	room      *budget
	retry     func(ctx context.Context, m *nats.Msg) error
	connected func() bool

	mu     sync.Mutex
	queue  []*nats.Msg
	closed bool
	ended  bool // run has returned; later messages are dropped
	wake   chan struct{}

	pending []pending // owned by run
}

type pending struct {
	msg *nats.Msg
	ack jetstream.PubAckFuture
}

func newPublisher(js jetstream.JetStream, room *budget, connected func() bool, retry func(context.Context, *nats.Msg) error) *publisher {
	return &publisher{js: js, room: room, connected: connected, retry: retry, wake: make(chan struct{}, 1)}
}

// publish queues m; it never waits.
func (p *publisher) publish(m *nats.Msg) {
	p.mu.Lock()
	if p.ended {
		p.mu.Unlock()
		p.room.give(int64(len(m.Data)))
		return
	}
	p.queue = append(p.queue, m)
	p.mu.Unlock()
	p.signal()
}

// close says that nothing more will be queued.
func (p *publisher) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.signal()
}

func (p *publisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run sends what is queued until the publisher is closed and everything
// is stored, or ctx ends; then what is left is given up.
func (p *publisher) run(ctx context.Context) {
	defer p.giveUp()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		p.mu.Lock()
		batch, closed := p.queue, p.closed
		p.queue = nil
		p.mu.Unlock()
		for _, m := range batch {
			p.send(ctx, m)
		}
		if len(batch) > 0 {
			continue
		}
		if closed {
			p.settle(ctx, len(p.pending))
			return
		}
		select {
		case <-p.wake:
		case <-tick.C:
			// Mend failures while the job is quiet, not only when it ends.
			p.reap(ctx)
		case <-ctx.Done():
		}
	}
}

// giveUp drops whatever is not stored when run ends, and anything queued
// later, returning its bytes to the budget.
func (p *publisher) giveUp() {
	p.mu.Lock()
	p.ended = true
	left := p.queue
	p.queue = nil
	p.mu.Unlock()
	for _, m := range left {
		p.room.give(int64(len(m.Data)))
	}
	for _, pm := range p.pending {
		p.room.give(int64(len(pm.msg.Data)))
	}
	p.pending = nil
}

func (p *publisher) send(ctx context.Context, m *nats.Msg) {
	p.reap(ctx)
	if len(p.pending) >= window {
		p.settle(ctx, len(p.pending)/2)
	}
	// While the link is down a publish would only pile up in the client's
	// reconnect buffer, where it may be lost; the queue here holds it.
	if !p.connected() {
		waitUntil(ctx, p.connected)
		// What the drop failed goes again first, so that the stream keeps
		// the lines in order where it can.
		p.reap(ctx)
	}
	f, err := p.js.PublishMsgAsync(m)
	if err != nil {
		f = nil
	}
	p.pending = append(p.pending, pending{m, f})
}

// reap drops the oldest acks that have arrived and republishes at once any
// message whose publish failed, without waiting for acks still to come, so
// a failure is mended while the job runs rather than when it ends.
func (p *publisher) reap(ctx context.Context) {
	n := 0
	for _, pm := range p.pending {
		if pm.ack != nil {
			select {
			case <-pm.ack.Ok():
				p.stored(pm.msg)
				n++
				continue
			case <-pm.ack.Err():
			default:
				p.pending = append(p.pending[:0], p.pending[n:]...)
				return
			}
		}
		_ = p.retry(ctx, pm.msg)
		p.stored(pm.msg)
		n++
	}
	p.pending = p.pending[:0]
}

// settle waits for the oldest n acks, republishing any message that failed.
func (p *publisher) settle(ctx context.Context, n int) {
	for _, pm := range p.pending[:n] {
		ok := false
		if pm.ack != nil {
			select {
			case <-pm.ack.Ok():
				ok = true
			case <-pm.ack.Err():
			case <-ctx.Done():
			}
		}
		if !ok {
			_ = p.retry(ctx, pm.msg)
		}
		p.stored(pm.msg)
	}
	p.pending = append(p.pending[:0], p.pending[n:]...)
}

// stored returns a message's bytes to the budget: it is stored, or was
// given up on because ctx ended.
func (p *publisher) stored(m *nats.Msg) { p.room.give(int64(len(m.Data))) }
