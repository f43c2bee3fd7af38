package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-run/outpost/subjects"
)

// Limits are the retention knobs of the streams.
type Limits struct {
	// EventsMaxAge is how long status events and log lines are kept.
	EventsMaxAge time.Duration
	// EventsMaxBytes bounds the events stream; the oldest go first.
	EventsMaxBytes int64
	// AuditMaxAge is how long the audit trail is kept.
	AuditMaxAge time.Duration
	// JobsMaxAge is how long a job may wait in the queue for an agent.
	JobsMaxAge time.Duration
	// AckWait is how long an agent may go silent before its job is given to
	// another agent of the tag.
	AckWait time.Duration
	// Replicas is the stream replication factor on a cluster.
	Replicas int
}

// DefaultLimits suit one machine.
var DefaultLimits = Limits{
	EventsMaxAge:   7 * 24 * time.Hour,
	EventsMaxBytes: 1 << 30,
	AuditMaxAge:    90 * 24 * time.Hour,
	JobsMaxAge:     7 * 24 * time.Hour,
	AckWait:        30 * time.Second,
	Replicas:       1,
}

const dedupWindow = 2 * time.Minute

// ensureStreams creates or updates the streams, buckets and the
// coordinator's consumer. It is idempotent: every start runs it.
func ensureStreams(ctx context.Context, js jetstream.JetStream, l Limits) (jetstream.KeyValue, jetstream.KeyValue, error) {
	streams := []jetstream.StreamConfig{{
		Name:        subjects.JobsStream,
		Description: "Outpost job requests, one consumer per tag",
		Subjects:    []string{subjects.JobsPrefix + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      l.JobsMaxAge,
		MaxMsgSize:  subjects.MaxSubmitBytes * 2,
		Discard:     jetstream.DiscardNew,
		Duplicates:  dedupWindow,
		Replicas:    l.Replicas,
		// The coordinator looks for the requests of many ended jobs at once.
		AllowDirect: true,
		// The queue's head never expires (see ensureQueueHead).
		AllowMsgTTL: true,
	}, {
		Name:        subjects.EventsStream,
		Description: "Outpost status events and log lines, a subject per job",
		Subjects:    []string{subjects.EventsPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      l.EventsMaxAge,
		MaxBytes:    l.EventsMaxBytes,
		MaxMsgSize:  subjects.MaxLogMsg * 2,
		Discard:     jetstream.DiscardOld,
		Duplicates:  dedupWindow,
		Replicas:    l.Replicas,
		// Agents read a job's last status before running it again.
		AllowDirect: true,
		// Live followers in other accounts hear what was stored, once.
		RePublish: &jetstream.RePublish{Source: subjects.EventsPrefix + ".>", Destination: subjects.LivePrefix + ".>"},
	}, {
		Name:        subjects.AuditStream,
		Description: "Outpost audit trail: every API call and credential change",
		Subjects:    []string{subjects.AuditPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      l.AuditMaxAge,
		MaxBytes:    256 << 20,
		Discard:     jetstream.DiscardOld,
		Replicas:    l.Replicas,
	}}
	for _, cfg := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return nil, nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	if err := ensureQueueHead(ctx, js); err != nil {
		return nil, nil, err
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, subjects.EventsStream, jetstream.ConsumerConfig{
		Durable:       subjects.CoordinatorConsumer,
		Description:   "the coordinator folds status events into job records",
		FilterSubject: subjects.AllStatus,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 10000,
	}); err != nil {
		return nil, nil, fmt.Errorf("consumer %s: %w", subjects.CoordinatorConsumer, err)
	}
	jobs, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: subjects.JobsBucket, Description: "Outpost job records", History: 1,
		// A record must outlive the longest wait plus the longest run.
		Storage: jetstream.FileStorage, TTL: max(l.EventsMaxAge, l.JobsMaxAge+subjects.MaxTimeout+24*time.Hour), Replicas: l.Replicas,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bucket %s: %w", subjects.JobsBucket, err)
	}
	creds, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: subjects.CredsBucket, Description: "Outpost credentials issued (public parts only)", History: 5,
		Storage: jetstream.FileStorage, Replicas: l.Replicas,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bucket %s: %w", subjects.CredsBucket, err)
	}
	return jobs, creds, nil
}

// ensureQueueHead stores the jobs stream's head, a message that is no job
// and never expires, unless it is there. Without it, once an agent acked
// the jobs before, a work queue's first message is the next job, and a
// consumer that looks for its next message from the stream's first one has
// the server count the messages its filter matches, walking the subject of
// every queued job of every tag: at a queue a thousand deep that was a
// tenth of the coordinator's CPU per job. From a position after the first
// message, the server looks from that position on. A purge of the whole
// stream takes the head with it, which only slows the queue down until the
// coordinator starts again.
func ensureQueueHead(ctx context.Context, js jetstream.JetStream) error {
	// Stored only where no head is: two coordinators starting at once store
	// one between them.
	_, err := js.PublishMsg(ctx, &nats.Msg{Subject: subjects.JobsHead, Header: nats.Header{jetstream.MsgTTLHeader: []string{"never"}}},
		jetstream.WithExpectLastSequencePerSubject(0))
	if wrongLastSequence(err) {
		return nil // there is one
	}
	if err != nil {
		return fmt.Errorf("stream %s: store its head: %w", subjects.JobsStream, err)
	}
	return nil
}

// ensureTagConsumer creates the pull consumer all agents of tag share.
func ensureTagConsumer(ctx context.Context, js jetstream.JetStream, tag string, l Limits) error {
	_, err := js.CreateOrUpdateConsumer(ctx, subjects.JobsStream, jetstream.ConsumerConfig{
		Durable:       subjects.AgentsConsumer(tag),
		Description:   "jobs for the agents of tag " + tag,
		FilterSubject: subjects.JobsFilter(tag),
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       l.AckWait,
		MaxDeliver:    -1,
		MaxWaiting:    4096,
		MaxAckPending: -1,
	})
	if err != nil {
		return fmt.Errorf("consumer for tag %s: %w", tag, err)
	}
	return nil
}
