package coordinator

import (
	"context"
	"errors"
	"fmt"

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
