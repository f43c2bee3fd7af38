package agent

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Line is a line of job output (or a chunk of a long one), as the readers
// hand it to the batcher.
type Line = line

// NewLine makes a Line.
func NewLine(stream, text string, partial bool) Line {
	return line{stream: stream, text: []byte(text), partial: partial}
}

// PublishLog batches lines from in and publishes them on subject as the log
// messages of job's attempt, as run does with a job's output, and returns
// once every message is stored.
func PublishLog(ctx context.Context, js jetstream.JetStream, subject, job string, attempt int, in <-chan Line) {
	PublishLogLinger(ctx, js, subject, job, attempt, 0, in)
}

// PublishLogLinger is PublishLog with a linger of its own; zero keeps the
// agent's.
func PublishLogLinger(ctx context.Context, js jetstream.JetStream, subject, job string, attempt int, linger time.Duration, in <-chan Line) {
	room := newBudget(DefaultMaxBuffered)
	pub := newPublisher(js, room, func() bool { return true }, func(ctx context.Context, m *nats.Msg) error {
		_, err := js.PublishMsg(ctx, m)
		return err
	})
	b := &batcher{subject: subject, job: job, attempt: attempt, pub: pub, room: room, linger: linger}
	go b.run(in)
	pub.run(ctx)
}

// Stream, Text and Partial read a Line.
func (l line) Stream() string { return l.stream }
func (l line) Text() string   { return string(l.text) }
func (l line) Partial() bool  { return l.partial }

// CgroupsUsable reports why this process cannot make job cgroups, if it
// cannot, by making and removing an agent's own cgroup.
func CgroupsUsable() error {
	h, err := newCgroups("probe-"+strconv.Itoa(os.Getpid()), CgroupOptions{})
	if err == nil {
		h.close()
	}
	return err
}

// CgroupVersion is "v1" or "v2", or empty for an agent without cgroups.
func (a *Agent) CgroupVersion() string {
	if a.cgroups == nil {
		return ""
	}
	return a.cgroups.version()
}
