package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/subjects"
)

// dequeue takes a job's request off the queue, if it is still there, by
// deleting that one message. A purge by subject would do the same, but on
// a work queue whose consumer has other deliveries pending, nats-server
// (2.15) may move the consumer's ack floor past them ("error on write
// store state from purge: bad pending entry"), and those are then never
// delivered again: the soak found jobs of a killed agent left running
// until the coordinator requeued them.
func (c *Coordinator) dequeue(ctx context.Context, rec subjects.Record) error {
	m, err := c.jobsStream.GetLastMsgForSubject(ctx, subjects.JobSubject(rec.Tag, rec.ID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find the request of job %s: %w", rec.ID, err)
	}
	if err := c.jobsStream.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("delete the request of job %s: %w", rec.ID, err)
	}
	return nil
}

// leftovers are the jobs that ended lately, whose requests may still be on
// the queue: the agent acks a job (which takes its request off) after it
// stored the job's end, so normally the request is gone by the time the
// coordinator looks, but an agent that died in between leaves it there,
// to be delivered again after the ack wait. Looking for each request as
// its job ends was a JetStream request per job, and found nothing nearly
// every time; so the coordinator waits a little, for the acks to land,
// and then asks for all requests of the jobs that ended meanwhile at
// once (clearLeftovers).
type leftovers struct {
	mu   sync.Mutex
	jobs []subjects.Record
}

// add notes that rec ended.
func (l *leftovers) add(rec subjects.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.jobs = append(l.jobs, rec)
}

// take returns the jobs noted since the last take.
func (l *leftovers) take() []subjects.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	jobs := l.jobs
	l.jobs = nil
	return jobs
}

// leftoverRound is how often the requests of ended jobs are looked for;
// each is looked for after one or two rounds, well within the ack wait
// after which the server would deliver it again.
func leftoverRound(ackWait time.Duration) time.Duration {
	return min(max(ackWait/4, 10*time.Millisecond), time.Second)
}

// clearLeftovers takes the requests of ended jobs off the queue, until ctx
// ends (see leftovers).
func (c *Coordinator) clearLeftovers(ctx context.Context) {
	t := time.NewTicker(leftoverRound(c.limits.AckWait))
	defer t.Stop()
	var ripe []subjects.Record
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		for len(ripe) > 0 {
			n := min(len(ripe), multiLastMax)
			if err := c.dequeueAll(ctx, ripe[:n]); err != nil {
				c.log.Warn("could not take finished jobs off the queue; their agents will be told to stop them", "jobs", n, "err", err)
			}
			ripe = ripe[n:]
		}
		ripe = c.left.take()
	}
}

// multiLastMax is the most subjects one batched direct get may ask for
// (the server's limit).
const multiLastMax = 1024

// dequeueAll takes the requests of jobs off the queue, if they are still
// there, with one batched direct get of the last message of each job's
// subject, and a delete of each one found.
func (c *Coordinator) dequeueAll(ctx context.Context, jobs []subjects.Record) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req := struct {
		MultiLast []string `json:"multi_last"`
	}{}
	for _, rec := range jobs {
		req.MultiLast = append(req.MultiLast, subjects.JobSubject(rec.Tag, rec.ID))
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	inbox := c.conn.NewInbox()
	sub, err := c.conn.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := c.conn.PublishRequest(jetstream.DefaultAPIPrefix+"DIRECT.GET."+subjects.JobsStream, inbox, b); err != nil {
		return err
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return fmt.Errorf("look for the requests of %d ended jobs: %w", len(jobs), err)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204", "404": // the end of the batch; nothing found
			return nil
		default:
			return fmt.Errorf("look for the requests of %d ended jobs: the server answered %s %s", len(jobs), status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return fmt.Errorf("look for the requests of %d ended jobs: a reply without a sequence: %w", len(jobs), err)
		}
		if err := c.jobsStream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("delete the request %s: %w", m.Header.Get(jetstream.SubjectHeader), err)
		}
		c.log.Info("took the request of a finished job off the queue", "subject", m.Header.Get(jetstream.SubjectHeader))
	}
}
