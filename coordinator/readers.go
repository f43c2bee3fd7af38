package coordinator

import (
	"context"
	"crypto/rand"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/subjects"
)

// readerIdle is how long a reader consumer lives unused, so a reader that
// died frees its slot.
const readerIdle = time.Minute

// read makes a replay consumer for who, in the first free slot of its
// pinned names, filtered to what its role may read. Readers cannot make
// consumers themselves: their accounts have no JetStream, which is what
// keeps them from aiming JetStream's replies at JetStream.
func (c *Coordinator) read(ctx context.Context, who caller, req subjects.ReadRequest) (*subjects.Reader, error) {
	stream, filters, err := readScope(who, req)
	if err != nil {
		return nil, err
	}
	cfg := jetstream.ConsumerConfig{
		AckPolicy:     jetstream.AckNonePolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// In memory and on one server: made on disk, each cost its reader
		// milliseconds and held up the stream's writers meanwhile, and a
		// cluster that lost a node can still make it. A restarted server
		// loses it; the reader asks again from where it was (FromSeq).
		MemoryStorage:     true,
		InactiveThreshold: readerIdle,
		Replicas:          1,
	}
	if req.FromSeq > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, req.FromSeq
	}
	if len(filters) == 1 {
		cfg.FilterSubject = filters[0]
	} else {
		cfg.FilterSubjects = filters
	}
	for slot := 1; slot <= subjects.ReaderSlots; slot++ {
		cfg.Name = subjects.ReaderConsumer(who.name, slot)
		// Unique, so that the server refuses a slot in use rather than hand
		// back an equal consumer: two reads would split the messages.
		cfg.Description = "outpost reader " + rand.Text()
		cons, err := c.js.CreateConsumer(ctx, stream, cfg)
		switch {
		case err == nil:
			return &subjects.Reader{Stream: stream, Consumer: cfg.Name, Pending: cons.CachedInfo().NumPending}, nil
		case errors.Is(err, jetstream.ErrConsumerExists), errors.Is(err, jetstream.ErrConsumerNameAlreadyInUse):
			continue
		default:
			return nil, err
		}
	}
	return nil, subjects.Errorf(subjects.CodeConflict, "all %d reader slots of %s are in use: close another 'outpost logs', or wait a minute for an abandoned one to expire", subjects.ReaderSlots, who.name)
}

// readScope is the stream and filters of a read: a job's events as far as
// who may see them, or the audit trail for admins and observers.
func readScope(who caller, req subjects.ReadRequest) (string, []string, error) {
	if req.Audit {
		if who.role != accounts.RoleAdmin && who.role != accounts.RoleObserver {
			return "", nil, forbidden(who, "read the audit trail")
		}
		return subjects.AuditStream, []string{subjects.AuditPrefix + ".>"}, nil
	}
	if err := subjects.ValidJobID(req.Job); err != nil {
		return "", nil, subjects.Errorf(subjects.CodeBadRequest, "%v", err)
	}
	var filters []string
	switch who.role {
	case accounts.RoleAdmin:
		filters = []string{subjects.JobEvents("*", "*", req.Job)}
	case accounts.RoleUser:
		filters = []string{subjects.JobEvents("*", who.name, req.Job)}
	case accounts.RoleObserver:
		for _, t := range who.tags {
			filters = append(filters, subjects.JobEvents(t, "*", req.Job))
		}
	}
	if len(filters) == 0 {
		return "", nil, forbidden(who, "read job events")
	}
	return subjects.EventsStream, filters, nil
}

// release deletes one of who's reader consumers.
func (c *Coordinator) release(ctx context.Context, who caller, req subjects.ReleaseRequest) error {
	if !subjects.ReaderOf(req.Consumer, who.name) {
		return subjects.Errorf(subjects.CodeBadRequest, "%q is not one of your reader consumers (%s to %s)", req.Consumer, subjects.ReaderConsumer(who.name, 1), subjects.ReaderConsumer(who.name, subjects.ReaderSlots))
	}
	switch req.Stream {
	case "":
		req.Stream = subjects.EventsStream
	case subjects.EventsStream, subjects.AuditStream:
	default:
		return subjects.Errorf(subjects.CodeBadRequest, "stream %q has no reader consumers (%s or %s)", req.Stream, subjects.EventsStream, subjects.AuditStream)
	}
	// Slot names repeat across the two streams: only the one named goes.
	if err := c.js.DeleteConsumer(ctx, req.Stream, req.Consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	return nil
}
