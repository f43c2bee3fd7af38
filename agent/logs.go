package agent

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
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

// line is one line (or one chunk of an over-long line) of job output.
type line struct {
	stream  string
	text    []byte // without the trailing newline
	partial bool   // the line goes on in the next chunk
}

// readLines sends the lines of r to out until r ends. Lines longer than
// subjects.MaxLine are cut into chunks marked partial, never dropped.
func readLines(r io.Reader, stream string, out chan<- line) {
	br := bufio.NewReaderSize(r, subjects.MaxLine)
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

// batcher groups lines into log messages: consecutive lines of one stream,
// flushed when the stream changes, when a chunk is partial, when the size
// cap is reached, or after the linger. Lines are numbered from 1 in the
// order read, across both streams, so each message is a run of numbers.
type batcher struct {
	subject string
	job     string
	attempt int
	pub     *publisher
	stats   *stats // may be nil
	// limit is the most output bytes sent for the attempt; past it lines are
	// counted, not sent, and one marker line on stderr says so at the end.
	limit   int64
	sent    int64
	dropped int

	next    int // number of the next line
	first   int // number of the buffered message's first line
	strm    string
	buf     []byte
	flushed time.Time // when the last message was sent
	// linger overrides the package's linger (tests); zero keeps it.
	linger time.Duration
}

// run batches lines from in until it closes, then flushes the rest.
func (b *batcher) run(ctx context.Context, in <-chan line) {
	b.next = 1
	wait := cmp.Or(b.linger, linger)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	reap := time.NewTicker(time.Second)
	defer reap.Stop()
	for {
		select {
		case <-reap.C:
			b.pub.reap(ctx)
		case l, ok := <-in:
			if !ok {
				b.flush(ctx, false)
				b.markTruncation(ctx)
				return
			}
			if b.dropped > 0 || (b.limit > 0 && b.sent+int64(len(l.text))+1 > b.limit) {
				b.dropped++
				continue
			}
			b.sent += int64(len(l.text)) + 1
			if len(b.buf) > 0 && (l.stream != b.strm || len(b.buf)+len(l.text)+1 > subjects.MaxLogMsg) {
				b.flush(ctx, false)
			}
			quiet := false
			if len(b.buf) == 0 {
				b.first, b.strm = b.next, l.stream
				timer.Reset(wait)
				quiet = time.Since(b.flushed) >= wait
			}
			b.buf = append(append(b.buf, l.text...), '\n')
			b.next++
			switch {
			case l.partial:
				b.flush(ctx, true)
			case quiet && len(in) == 0:
				b.flush(ctx, false)
			}
		case <-timer.C:
			b.flush(ctx, false)
		}
	}
}

// markTruncation adds, after the last line sent, one line on stderr saying
// how much output the limit held back, so a reader never mistakes a cut
// log for a whole one.
func (b *batcher) markTruncation(ctx context.Context) {
	if b.dropped == 0 {
		return
	}
	b.first, b.strm = b.next, subjects.StreamStderr
	b.buf = fmt.Appendf(nil, "[outpost: output truncated at %d bytes; %d more lines were not kept]\n", b.limit, b.dropped)
	b.next++
	b.flush(ctx, false)
}

func (b *batcher) flush(ctx context.Context, partial bool) {
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
	b.pub.publish(ctx, m)
	b.flushed = time.Now()
	if b.stats != nil {
		b.stats.lines.Add(uint64(bytes.Count(b.buf, []byte{'\n'})))
		b.stats.bytes.Add(uint64(len(b.buf)))
	}
	b.buf = nil
}

// window is how many log messages may await their ack at once.
const window = 256

// publisher sends a job's log messages asynchronously, at most window
// unacknowledged at a time, and republishes, in order, any whose ack failed
// (a dropped connection, a timeout): Nats-Msg-Id makes a republish of a
// message that was in fact stored a no-op, so nothing is lost and nothing
// shows twice.
type publisher struct {
	js      jetstream.JetStream
	pending []pending
	retry   func(ctx context.Context, m *nats.Msg) error
}

type pending struct {
	msg *nats.Msg
	ack jetstream.PubAckFuture
}

func (p *publisher) publish(ctx context.Context, m *nats.Msg) {
	p.reap(ctx)
	if len(p.pending) >= window {
		p.settle(ctx, len(p.pending)/2)
	}
	f, err := p.js.PublishMsgAsync(m)
	p.pending = append(p.pending, pending{m, f})
	if err != nil {
		p.pending[len(p.pending)-1].ack = nil
	}
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
				n++
				continue
			case <-pm.ack.Err():
			default:
				p.pending = append(p.pending[:0], p.pending[n:]...)
				return
			}
		}
		_ = p.retry(ctx, pm.msg)
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
	}
	p.pending = append(p.pending[:0], p.pending[n:]...)
}

// close waits until every message is stored.
func (p *publisher) close(ctx context.Context) { p.settle(ctx, len(p.pending)) }
