package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/secrets"
	"github.com/outpost-run/outpost/subjects"
)

// execute runs one delivered job to its end. The job message is acked only
// after the terminal status is stored; until then InProgress keeps it ours,
// so if this agent dies the job goes to another agent as the next attempt.
func (a *Agent) execute(ctx context.Context, m *nats.Msg, ackWait time.Duration) {
	meta, err := m.Metadata()
	if err != nil {
		a.log.Error("job message without metadata", "subject", m.Subject, "err", err)
		_ = m.Term()
		return
	}
	job, err := decodeJob(m)
	if err != nil {
		a.log.Error("dropped a malformed job", "subject", m.Subject, "err", err)
		_ = m.Term()
		return
	}
	// The coordinator republishes a job as a later attempt when it knows its
	// agent is gone; redeliveries of one request count on from there.
	attempt := job.Attempt + int(meta.NumDelivered) - 1
	log := a.log.With("job", job.ID, "attempt", attempt)

	keep, cancelKeep := context.WithCancel(ctx)
	defer cancelKeep()
	go func() {
		t := time.NewTicker(ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = m.InProgress()
			case <-keep.Done():
				return
			}
		}
	}()

	end := subjects.StatusEvent{Job: job.ID, Attempt: attempt, Agent: a.name}
	secretValues, secretErr := a.openSecrets(job)
	switch {
	case a.wasStopped(job.ID):
		end.State, end.Error = subjects.StateStopped, "stopped before it started"
	case attempt == 1 && job.QueueExpired(time.Now()):
		end.State = subjects.StateFailed
		end.Error = fmt.Sprintf("no agent started it within its queue_timeout of %s", time.Duration(job.QueueTimeout))
	case attempt > job.MaxAttempts:
		end.State = subjects.StateFailed
		end.Error = fmt.Sprintf("gave up: the agents running it were lost, or could not run it, %d times (max_attempts is %d)", attempt-1, job.MaxAttempts)
	case job.Limits != nil && a.cgroups == nil:
		// Never run without the limits asked for: another agent of the tag
		// may have cgroups. The delivery counts as an attempt.
		log.Warn("cannot enforce the job's limits here; it goes back to the queue", "limits", job.Limits.String(), "reason", a.noCgroups)
		_ = m.NakWithDelay(refuseDelay)
		return
	case secretErr != nil:
		// Sealed to other agents of the tag (this one joined or restarted
		// after the submit), or damaged: one of those may open them.
		log.Warn("cannot open the job's secrets; it goes back to the queue", "err", secretErr)
		_ = m.NakWithDelay(refuseDelay)
		return
	default:
		running := end
		running.State, running.At = subjects.StateRunning, time.Now().UTC()
		if err := a.publishStatus(ctx, job, running); err != nil {
			log.Warn("could not report running; the job goes back to the queue", "err", err)
			return
		}
		log.Info("job started", "command", job.Command)
		res := a.run(ctx, job, attempt, secretValues)
		if ctx.Err() != nil {
			// The agent is shutting down and killed the job: hand it to
			// another agent now rather than after the ack wait.
			log.Info("job interrupted by agent shutdown; requeued")
			_ = m.Nak()
			return
		}
		end.State, end.ExitCode, end.Error, end.Usage = res.state, res.exitCode, res.err, res.usage
	}
	end.At = time.Now().UTC()
	// The terminal status must be stored even while the agent shuts down.
	fin, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	if err := a.publishStatus(fin, job, end); err != nil {
		log.Error("could not store the terminal status; the job will run again", "err", err)
		return
	}
	if err := m.AckSync(nats.Context(fin)); err != nil {
		log.Warn("ack failed; the job may be redelivered and will be fenced by attempt", "err", err)
	}
	log.Info("job ended", "state", end.State, "exit_code", deref(end.ExitCode))
}

// openSecrets opens the job's sealed secrets, if it has any, with this
// agent's curve key.
func (a *Agent) openSecrets(job subjects.Job) (map[string]string, error) {
	if job.Secrets == nil {
		return nil, nil
	}
	return secrets.Open(job.Secrets, a.name, a.xkey)
}

// jobAckWait is the consumer's ack wait, as the coordinator wrote it on the
// job request.
func jobAckWait(m *nats.Msg) time.Duration {
	d, err := time.ParseDuration(m.Header.Get(subjects.HeaderAckWait))
	if err != nil || d <= 0 {
		return defaultAckWait
	}
	return d
}

func decodeJob(m *nats.Msg) (subjects.Job, error) {
	tag, id, err := subjects.ParseJob(m.Subject)
	if err != nil {
		return subjects.Job{}, err
	}
	var job subjects.Job
	if err := json.Unmarshal(m.Data, &job); err != nil {
		return subjects.Job{}, fmt.Errorf("decode job %s: %w", id, err)
	}
	if job.ID != id || job.Tag != tag {
		return subjects.Job{}, fmt.Errorf("job %s/%s does not match its subject %s", job.Tag, job.ID, m.Subject)
	}
	if job.Attempt < 1 || job.Attempt > subjects.MaxAttemptsLimit {
		return subjects.Job{}, fmt.Errorf("job %s has attempt %d", id, job.Attempt)
	}
	if err := job.Validate(); err != nil {
		return subjects.Job{}, err
	}
	if err := subjects.ValidName(job.Owner); err != nil {
		return subjects.Job{}, err
	}
	return job, nil
}

// publishStatus stores a status event, retrying through reconnects until
// the server acknowledges it or ctx ends. Its message ID makes retries safe.
func (a *Agent) publishStatus(ctx context.Context, job subjects.Job, ev subjects.StatusEvent) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	m := nats.NewMsg(subjects.EventSubject(job.Tag, job.Owner, job.ID, subjects.KindStatus))
	m.Data = b
	m.Header.Set(subjects.HeaderMsgID, subjects.MsgID(job.ID, ev.Attempt, string(ev.State)))
	m.Header.Set(subjects.HeaderAttempt, strconv.Itoa(ev.Attempt))
	return a.storeWithRetry(ctx, m)
}

// storeWithRetry publishes m until JetStream acknowledges it.
func (a *Agent) storeWithRetry(ctx context.Context, m *nats.Msg) error {
	backoff := 50 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := a.js.PublishMsg(pctx, m)
		cancel()
		if err == nil {
			return nil
		}
		if d := a.conn.Denied(); d != nil {
			return fmt.Errorf("publish %s: %w", m.Subject, d)
		}
		a.stats.retries.Add(1)
		a.log.Warn("publish failed; retrying", "subject", m.Subject, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("publish %s: %w", m.Subject, err)
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
