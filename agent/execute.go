package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/secrets"
	"github.com/outpost-run/outpost/subjects"
)

// execute runs one delivered job to its end. The job message is acked only
// after the terminal status is stored; until then InProgress keeps it ours,
// so if this agent dies the job goes to another agent as the next attempt.
// free gives up the job's slot: once its process is done, the next job may
// start while this one's end is stored.
func (a *Agent) execute(ctx context.Context, m *nats.Msg, ackWait time.Duration, free func()) {
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
	defer a.hold(job.ID)()
	log := a.log.With("job", job.ID, "attempt", attempt)

	keep, cancelKeep := context.WithCancel(ctx)
	defer cancelKeep()
	// InProgress keeps the job ours, and goes at once on reconnecting: a
	// server that restarted may have lost the last ones, and hands the job
	// on when the ack wait it remembers runs out.
	reconnected := a.conn.StatusChanged(nats.CONNECTED)
	go func() {
		defer a.conn.RemoveStatusListener(reconnected)
		t := time.NewTicker(ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-reconnected:
			case <-keep.Done():
				return
			}
			_ = m.InProgress()
		}
	}()

	// One request is handled once here: delivered again while this agent
	// handles it (a server restarted from a state older than its
	// deliveries), it is left to the run under way, and acked once that
	// run's end is stored. Two runs would be two attempts of one job, side
	// by side, on one agent. If that handling stored no end (it refused the
	// job, left it to another run, or was cut short), this delivery is left
	// to its ack wait: a nak would undo a delay the handling asked for, or
	// hand the job on at once.
	mine, under := a.take(job)
	if under != nil {
		log.Info("job delivered again while this agent runs it; left to that run")
		free()
		select {
		case <-under.done:
		case <-ctx.Done():
			return
		}
		if under.ended {
			a.ackLater(ctx, m, ackWait, log)
		}
		return
	}
	defer a.untake(job, mine)

	if a.mayHaveEnded(meta, job, ackWait) {
		if why := a.ended(ctx, job, attempt, a.reconnectedWithin(ackWait)); why != "" {
			log.Info("job handed over again after it ended; acked, not run", "why", why)
			a.stats.ended.Add(1)
			mine.ended = true
			a.ackLater(ctx, m, ackWait, log)
			return
		}
	}

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
		end.Error = fmt.Sprintf("gave up after %d attempts (max_attempts is %d): each time its agent was lost, handed it back unfinished, or could not run it", attempt-1, job.MaxAttempts)
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
		// The running report and the start overlap, so the process does not
		// wait a round trip for it; run holds the output back until the
		// report is stored, and kills the process if it cannot be, or if
		// another run stored this attempt's running status first.
		reported := make(chan error, 1)
		go func() {
			taken, err := a.publishStatus(ctx, job, running)
			if err == nil && taken {
				err = errTaken
			}
			reported <- err
		}()
		log.Info("job started", "command", commandLine(job.Command))
		res, err := a.run(ctx, job, attempt, secretValues, reported)
		if errors.Is(err, errTaken) {
			// The server lost the request's delivery count (it restarted
			// before saving it) and delivered it again as the same attempt.
			// The run that stored the running status first acks the job; if
			// it is gone, the ack wait hands the job on as the next attempt.
			// Two runs of one attempt would mix their lines and statuses, so
			// this one's process, killed within a round trip, sent nothing.
			log.Warn("attempt already started by another run; leaving the job to it")
			return
		}
		if err != nil {
			log.Warn("could not report running; the job goes back to the queue", "err", err)
			if ctx.Err() != nil {
				// Stopped while the report was on its way (it may even be
				// stored): hand the job on now, not after the ack wait.
				_ = m.Nak()
			}
			return
		}
		if ctx.Err() != nil {
			// The agent is shutting down and killed the job: hand it to
			// another agent now rather than after the ack wait.
			log.Info("job interrupted by agent shutdown; requeued")
			_ = m.Nak()
			return
		}
		end.State, end.ExitCode, end.Error, end.Usage, end.Lines = res.state, res.exitCode, res.err, res.usage, &res.lines
	}
	end.At = time.Now().UTC()
	// A slot bounds the jobs' processes, and storing an end is a round
	// trip: the slot goes to the next job meanwhile, so an agent pulls its
	// next job while it stores the last one's end. Only as many ends as
	// there are slots are stored off their slots; past that a job keeps
	// its slot, so if the server stores none, the slots stay taken and no
	// more jobs come.
	select {
	case a.ending <- struct{}{}:
		defer func() { <-a.ending }()
		free()
	default:
	}
	// The terminal status is retried until it is stored, however long NATS
	// is out of reach, for as long as the agent runs, and for a while
	// after it was told to stop its jobs.
	fin, cancel := a.finalContext(ctx)
	defer cancel()
	if _, err := a.publishStatus(fin, job, end); err != nil {
		log.Error("could not store the terminal status; the job will run again", "err", err)
		return
	}
	mine.ended = true
	a.ackLater(ctx, m, ackWait, log)
	log.Info("job ended", "state", end.State, "exit_code", deref(end.ExitCode))
}

// takenKey names a job request: a requeue is another request of the job.
type takenKey struct {
	job     string
	attempt int // the request's own attempt
}

// takenJob is a request being handled here.
type takenJob struct {
	done  chan struct{} // closed once its handling returned
	ended bool          // its end is stored (set before done closes)
}

// take registers job's request as handled here, or, if it is already,
// returns the handling under way.
func (a *Agent) take(job subjects.Job) (mine, under *takenJob) {
	k := takenKey{job.ID, job.Attempt}
	a.mu.Lock()
	defer a.mu.Unlock()
	if t := a.taken[k]; t != nil {
		return nil, t
	}
	mine = &takenJob{done: make(chan struct{})}
	a.taken[k] = mine
	return mine, nil
}

func (a *Agent) untake(job subjects.Job, t *takenJob) {
	a.mu.Lock()
	delete(a.taken, takenKey{job.ID, job.Attempt})
	a.mu.Unlock()
	close(t.done)
}

// ackLater acks an ended job's request at once, and waits for the
// confirmation off the job's slot, which would otherwise be held for a
// round trip. It is retried through a reconnect: an ack lost with the
// connection would have the finished job delivered again should the
// coordinator not take it off the queue first (it may be down, too).
func (a *Agent) ackLater(ctx context.Context, m *nats.Msg, ackWait time.Duration, log *slog.Logger) {
	a.jobs.Add(1)
	go func() {
		defer a.jobs.Done()
		actx, cancel := a.finalContext(ctx)
		defer cancel()
		if err := a.ack(actx, m, ackWait); err != nil {
			log.Warn("ack failed; the job may be delivered again, and is then left alone", "err", err)
		}
	}()
}

// endedCheckTimeout bounds the look at a job's last status; past it the
// job runs, as it would without the look. Soon after a reconnect, a run of
// an earlier attempt that shows as running is given endedSettle to show
// its end, looked at every endedSettlePoll.
const (
	endedCheckTimeout = 2 * time.Second
	endedSettle       = 5 * time.Second
	endedSettlePoll   = 250 * time.Millisecond
)

// mayHaveEnded says whether a delivered job may have ended already: it was
// delivered before, it is a later attempt, or it came soon after a
// reconnect (an agent that started before its server could be reached
// counts as reconnected). A server that was killed restarts with its
// consumers' state as last saved, which may miss acks of jobs that ended
// since, and deliver those again, even as first deliveries. First
// deliveries at other times skip the look, which costs a round trip; a
// ghost among them is stopped by the coordinator when it reports running.
func (a *Agent) mayHaveEnded(meta *nats.MsgMetadata, job subjects.Job, ackWait time.Duration) bool {
	return meta.NumDelivered > 1 || job.Attempt > 1 || a.reconnectedWithin(2*ackWait)
}

// reconnectedWithin reports whether the agent's connection came back less
// than d ago. A reconnect is counted before anything arrives on the new
// connection, so the first delivery after it sees it.
func (a *Agent) reconnectedWithin(d time.Duration) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := a.conn.Stats().Reconnects; n != a.seen {
		a.seen, a.connectedAt = n, time.Now()
	}
	return !a.connectedAt.IsZero() && time.Since(a.connectedAt) < d
}

// ended reads the job's last status and says why the job must not run
// here (it ended, or a later attempt has it), or "" if it may. If the
// status cannot be read (an agent credential issued before agents could),
// the job runs, and the coordinator stops the run if the job had ended.
//
// With settle (the agent reconnected lately: the server may have been
// restarted from a state older than its deliveries), an earlier attempt
// of this request that shows as running may be one that ended while the
// server was down, or that ends as it comes back: its agent stores the end
// once it is back. Run at once, this delivery would run the job again,
// side by side or after it, which the coordinator stops too late for a
// short job. So it waits a few seconds for that end; a run whose agent
// died shows as running for good, and its job then runs here.
func (a *Agent) ended(ctx context.Context, job subjects.Job, attempt int, settle bool) string {
	deadline, waiting := time.Now().Add(endedSettle), false
	for {
		ev, err := a.lastStatus(ctx, job)
		if err != nil {
			a.log.Warn("could not read the last status of a job delivered again; running it", "job", job.ID, "err", err)
			return ""
		}
		if why := endedWhy(ev, job, attempt); why != "" || !settle || ev == nil ||
			ev.State != subjects.StateRunning || ev.Attempt >= attempt || time.Now().After(deadline) {
			return why
		}
		if !waiting {
			a.log.Info("an earlier attempt shows as running, soon after a reconnect; waiting for its end", "job", job.ID, "attempt", attempt, "running", ev.Attempt)
			waiting = true
		}
		select {
		case <-time.After(endedSettlePoll):
		case <-ctx.Done():
			return ""
		}
	}
}

func (a *Agent) lastStatus(ctx context.Context, job subjects.Job) (*subjects.StatusEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, endedCheckTimeout)
	defer cancel()
	return a.conn.LastStatus(ctx, job.Tag, job.Owner, job.ID)
}

// endedWhy says why a job whose last status is ev (nil: none) must not
// run as attempt here, or "" if it may.
func endedWhy(ev *subjects.StatusEvent, job subjects.Job, attempt int) string {
	switch {
	case ev == nil:
		return ""
	case ev.State.Terminal() && ev.Attempt >= job.Attempt:
		// An end older than the request's own attempt is that of a run
		// the coordinator gave up on and handed on as this request.
		return fmt.Sprintf("it ended %s in attempt %d", ev.State, ev.Attempt)
	case ev.Attempt > attempt:
		return fmt.Sprintf("attempt %d has it, this is attempt %d", ev.Attempt, attempt)
	}
	return ""
}

// ack acks a job whose terminal status is stored, confirmed by the server,
// retrying through a reconnect for up to the ack wait.
func (a *Agent) ack(ctx context.Context, m *nats.Msg, ackWait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, ackWait)
	defer cancel()
	for {
		a.waitConnected(ctx)
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		err := m.AckSync(nats.Context(actx))
		acancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		a.stats.retries.Add(1)
	}
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
// the server acknowledges it or ctx ends. Its message ID makes retries
// safe, and tells when another run stored the same event first.
func (a *Agent) publishStatus(ctx context.Context, job subjects.Job, ev subjects.StatusEvent) (taken bool, err error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return false, err
	}
	m := nats.NewMsg(subjects.EventSubject(job.Tag, job.Owner, job.ID, subjects.KindStatus))
	m.Data = b
	m.Header.Set(subjects.HeaderMsgID, subjects.MsgID(job.ID, ev.Attempt, string(ev.State)))
	m.Header.Set(subjects.HeaderAttempt, strconv.Itoa(ev.Attempt))
	return a.store(ctx, m)
}

// finalStatusGrace is how long an agent that stops its jobs still tries to
// store the terminal status of a job that had ended, and to ack it.
const finalStatusGrace = 30 * time.Second

// errTaken says that another run stored an attempt's running status first.
var errTaken = errors.New("attempt already started by another run")

// finalContext outlives ctx, the jobs' context, by finalStatusGrace: what
// a job that ended still has to say is said while the agent stops.
func (a *Agent) finalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	fin, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(finalStatusGrace, cancel) })
	return fin, func() { stop(); cancel() }
}

// storeWithRetry publishes m until JetStream acknowledges it.
func (a *Agent) storeWithRetry(ctx context.Context, m *nats.Msg) error {
	_, err := a.store(ctx, m)
	return err
}

// store publishes m until JetStream acknowledges it, and reports whether
// the first try found m stored already (its Nats-Msg-Id seen in the
// de-duplication window): published by someone else, since a later try
// may find our own earlier one whose ack was lost. While the connection is
// down it only waits: a publish then would pile up in the client's
// reconnect buffer.
func (a *Agent) store(ctx context.Context, m *nats.Msg) (dup bool, err error) {
	backoff := 50 * time.Millisecond
	for first := true; ; first = false {
		if !a.waitConnected(ctx) {
			return false, fmt.Errorf("publish %s: not connected to NATS: %w", m.Subject, ctx.Err())
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := a.js.PublishMsg(pctx, m)
		cancel()
		if err == nil {
			return first && ack.Duplicate, nil
		}
		if d := a.conn.Denied(); d != nil {
			return false, fmt.Errorf("publish %s: %w", m.Subject, d)
		}
		a.stats.retries.Add(1)
		a.log.Warn("publish failed; retrying", "subject", m.Subject, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return false, fmt.Errorf("publish %s: %w", m.Subject, err)
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

// commandLine is a job's command as a log shows it, the way fmt's %v shows
// a slice, without the reflection that made it a third of the agent's
// cost of logging a job.
func commandLine(args []string) string { return "[" + strings.Join(args, " ") + "]" }
