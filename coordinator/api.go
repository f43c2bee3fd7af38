package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/outpost-run/outpost/accounts"
	"github.com/outpost-run/outpost/subjects"
)

const (
	apiQueue       = "outpost-coordinator"
	apiWorkers     = 32
	requestTimeout = 10 * time.Second
	defaultList    = 50
	maxList        = 1000
	// failoverWait is how long a read waits out a cluster's leader election.
	failoverWait = 6 * time.Second
)

// serveAPI subscribes to every API subject. Requests are handled by a
// bounded pool, so a slow one does not hold up the rest.
func (c *Coordinator) serveAPI(ctx context.Context) (*nats.Subscription, error) {
	sem := make(chan struct{}, apiWorkers)
	sub, err := c.conn.QueueSubscribe(subjects.APIAll, apiQueue, func(m *nats.Msg) {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			c.handle(ctx, m)
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subjects.APIAll, err)
	}
	return sub, nil
}

// requester is who sent an API request, as the server tells: a request
// reaches OUTPOST only through a credential account's import of the API,
// with Share, so the server sets this header itself and overwrites any
// that a client sent (NATS-NOTES point 6).
type requester struct {
	Account string `json:"acc"`
	User    string `json:"user"`
}

// requestInfo is the header that carries the requester.
const requestInfo = "Nats-Request-Info"

// handle checks a request before trusting it: the subject must have the
// exact shape, the server must have stamped who sent it, and there must be
// a reply to answer on. A message that merely lands on an API subject,
// such as a reply redirected there, has neither a stamp of the right
// credential nor a reply.
func (c *Coordinator) handle(ctx context.Context, m *nats.Msg) {
	name, verb, err := subjects.ParseAPI(m.Subject)
	var id requester
	if err == nil {
		err = json.Unmarshal([]byte(m.Header.Get(requestInfo)), &id)
	}
	if err != nil || id.User == "" || m.Reply == "" {
		c.log.Warn("api request dropped", "subject", m.Subject, "reply", m.Reply, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	reply := c.call(ctx, name, id, verb, m.Data)
	if reply.Error != nil {
		c.log.Info("api request refused", "caller", name, "verb", verb, "code", reply.Error.Code, "msg", reply.Error.Message)
	}
	b, err := json.Marshal(reply)
	if err != nil {
		b, _ = json.Marshal(subjects.Reply{Error: subjects.Errorf(subjects.CodeInternal, "encode reply: %v", err)})
	}
	if err := m.Respond(b); err != nil {
		c.log.Warn("api reply failed", "caller", name, "verb", verb, "err", err)
	}
}

func (c *Coordinator) call(ctx context.Context, name string, id requester, verb string, data []byte) subjects.Reply {
	var (
		who    caller
		err    error
		reply  subjects.Reply
		target string
	)
	for giveUp := time.Now().Add(failoverWait); ; {
		found := false
		if who, err = c.creds.lookup(ctx, name, id); err == nil {
			found = true
			reply, target, err = c.dispatch(ctx, who, verb, data)
		}
		// While a cluster elects a new leader for a stream or bucket, its
		// requests find no responders for a few seconds; the lookup, and a
		// verb that only reads, are safe to try again.
		if !errors.Is(err, nats.ErrNoResponders) || (found && !readOnly(verb)) || time.Now().After(giveUp) {
			break
		}
		select {
		case <-time.After(250 * time.Millisecond):
			continue
		case <-ctx.Done():
		}
		break
	}
	if err != nil {
		reply = errReply(err)
	}
	result := "ok"
	if reply.Error != nil {
		result = string(reply.Error.Code)
	}
	c.m.api.WithLabelValues(verb, result).Inc()
	c.audit(who, name, verb, target, reply)
	return reply
}

// dispatch runs one verb for who and reports what it was about (a job ID
// or a credential name) for the audit trail.
func (c *Coordinator) dispatch(ctx context.Context, who caller, verb string, data []byte) (subjects.Reply, string, error) {
	// Observers only read, through reader consumers: records hold a job's
	// env and stdin, which are its owner's.
	if who.role == accounts.RoleObserver && verb != subjects.VerbRead && verb != subjects.VerbRelease {
		return subjects.Reply{}, "", forbidden(who, "call "+verb+" (observers read jobs with 'read')")
	}
	switch verb {
	case subjects.VerbSubmit:
		rec, err := c.submit(ctx, who, data)
		return subjects.Reply{Job: rec}, idOf(rec), err
	case subjects.VerbGet:
		var req subjects.GetRequest
		if err := parse(data, &req); err != nil {
			return subjects.Reply{}, "", err
		}
		rec, err := c.get(ctx, who, req)
		return subjects.Reply{Job: rec}, req.ID, err
	case subjects.VerbList:
		var req subjects.ListRequest
		if err := parse(data, &req); err != nil {
			return subjects.Reply{}, "", err
		}
		recs, err := c.list(ctx, who, req)
		if recs == nil {
			recs = []subjects.Record{}
		}
		return subjects.Reply{Jobs: recs}, "", err
	case subjects.VerbStop:
		var req subjects.StopRequest
		if err := parse(data, &req); err != nil {
			return subjects.Reply{}, "", err
		}
		rec, err := c.stop(ctx, who, req)
		return subjects.Reply{Job: rec}, req.ID, err
	case subjects.VerbRead:
		var req subjects.ReadRequest
		if err := parse(data, &req); err != nil {
			return subjects.Reply{}, "", err
		}
		r, err := c.read(ctx, who, req)
		return subjects.Reply{Reader: r}, req.Job, err
	case subjects.VerbRelease:
		var req subjects.ReleaseRequest
		if err := parse(data, &req); err != nil {
			return subjects.Reply{}, "", err
		}
		return subjects.Reply{}, req.Consumer, c.release(ctx, who, req)
	case subjects.VerbAgents:
		var req subjects.AgentsRequest
		if err := parse(data, &req); err != nil {
			return subjects.Reply{}, "", err
		}
		keys, err := c.agentKeys(who, req)
		return subjects.Reply{Agents: keys}, req.Tag, err
	}
	if who.role != accounts.RoleAdmin {
		return subjects.Reply{}, "", forbidden(who, "manage credentials")
	}
	switch verb {
	case subjects.VerbIssue:
		var req subjects.IssueRequest
		if err := parse(data, &req); err != nil {
			return subjects.Reply{}, "", err
		}
		cred, err := c.issueFor(ctx, req)
		if err != nil {
			return subjects.Reply{}, req.Name, err
		}
		return subjects.Reply{Credential: &cred.Credential, Creds: string(cred.Creds)}, req.Name, nil
	case subjects.VerbRevoke:
		var req subjects.RevokeRequest
		if err := parse(data, &req); err != nil {
			return subjects.Reply{}, "", err
		}
		cred, err := c.Revoke(ctx, req.Name)
		return subjects.Reply{Credential: &cred}, req.Name, err
	case subjects.VerbCreds:
		var req subjects.CredsRequest
		if err := parse(data, &req); err != nil {
			return subjects.Reply{}, "", err
		}
		all, err := c.creds.all(ctx)
		all = slices.DeleteFunc(all, func(cr subjects.Credential) bool { return req.Role != "" && cr.Role != req.Role })
		for i := range all {
			all[i].JWT = ""
		}
		slices.SortFunc(all, func(a, b subjects.Credential) int { return strings.Compare(a.Name, b.Name) })
		if all == nil {
			all = []subjects.Credential{}
		}
		return subjects.Reply{Credentials: all}, "", err
	}
	return subjects.Reply{}, "", subjects.Errorf(subjects.CodeBadRequest, "unknown verb %q", verb)
}

// readOnly reports whether a verb changes nothing, so that it may be
// retried.
func readOnly(verb string) bool {
	return verb == subjects.VerbGet || verb == subjects.VerbList || verb == subjects.VerbCreds || verb == subjects.VerbAgents
}

func idOf(rec *subjects.Record) string {
	if rec == nil {
		return ""
	}
	return rec.ID
}

func parse(data []byte, v any) error {
	if err := subjects.ParseRequest(data, v); err != nil {
		return subjects.Errorf(subjects.CodeBadRequest, "%v", err)
	}
	return nil
}

func errReply(err error) subjects.Reply {
	var apiErr *subjects.Error
	switch {
	case errors.As(err, &apiErr):
	case errors.Is(err, subjects.ErrBadSpec), errors.Is(err, subjects.ErrBadToken):
		apiErr = subjects.Errorf(subjects.CodeBadRequest, "%v", err)
	case errors.Is(err, errNoRecord):
		apiErr = subjects.Errorf(subjects.CodeNotFound, "%v", err)
	default:
		apiErr = subjects.Errorf(subjects.CodeInternal, "%v (retry; if it persists, see the coordinator's log)", err)
	}
	return subjects.Reply{Error: apiErr}
}

func forbidden(who caller, what string) error {
	return subjects.Errorf(subjects.CodeForbidden, "%s %q may not %s", who.role, who.name, what)
}

// submit records a job and queues it for the agents of its tag. Nothing is
// written for a request that fails validation; a job that cannot be queued
// ends failed with the reason, never half-queued.
func (c *Coordinator) submit(ctx context.Context, who caller, data []byte) (*subjects.Record, error) {
	if who.role != accounts.RoleAdmin && who.role != accounts.RoleUser {
		return nil, forbidden(who, "submit jobs")
	}
	if len(data) > subjects.MaxSubmitBytes {
		return nil, subjects.Errorf(subjects.CodeTooLarge, "submit payload is %d bytes, at most %d are allowed", len(data), subjects.MaxSubmitBytes)
	}
	spec, err := subjects.ParseSpec(data)
	if err != nil {
		return nil, subjects.Errorf(subjects.CodeBadRequest, "%v", err)
	}
	if who.role == accounts.RoleUser && !who.hasTag(spec.Tag) {
		return nil, subjects.Errorf(subjects.CodeForbidden, "user %q may not submit to tag %q (its tags: %s)", who.name, spec.Tag, strings.Join(who.tags, ", "))
	}
	if err := c.knownTag(ctx, spec.Tag); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	job := subjects.Job{JobSpec: spec, ID: strings.ToLower(ulid.Make().String()), Owner: who.name, SubmittedAt: now, Attempt: 1}
	rec := subjects.Record{Job: job, State: subjects.StateQueued}
	if err := c.queue(ctx, rec, now); err != nil {
		return nil, fmt.Errorf("queue job %s: %w", job.ID, err)
	}
	c.m.submitted.WithLabelValues(job.Tag).Inc()
	if job.QueueTimeout > 0 {
		c.timed.Add(1)
	}
	c.log.Info("job submitted", "job", job.ID, "tag", job.Tag, "owner", job.Owner)
	return &rec, nil
}

// queue creates a new job's record, stores its queued status and puts its
// request on the queue, all in one round trip: the three go out at once on
// one connection, in that order, and their acks are awaited together. The
// three are stored by three streams, so an agent may in principle report
// on the job before its record is stored; its report is then applied once
// the record is (see applyEvents). A job is never half-queued: if its
// record is not stored, its request is taken back (withdraw); if its
// request is not, its record ends failed.
func (c *Coordinator) queue(ctx context.Context, rec subjects.Record, at time.Time) error {
	status, err := json.Marshal(subjects.StatusEvent{Job: rec.ID, State: subjects.StateQueued, Attempt: 1, At: at})
	if err != nil {
		return err
	}
	m, err := c.jobMsg(rec.Job)
	if err != nil {
		return err
	}
	created, err := c.jobs.createAsync(rec)
	if err != nil {
		return err
	}
	queued, err := c.js.PublishAsync(subjects.EventSubject(rec.Tag, rec.Owner, rec.ID, subjects.KindStatus), status,
		jetstream.WithMsgID(subjects.MsgID(rec.ID, 1, string(subjects.StateQueued))))
	var request jetstream.PubAckFuture
	if err == nil {
		request, err = c.js.PublishMsgAsync(m, jetstream.WithMsgID(subjects.MsgID(rec.ID, rec.Attempt, "job")))
	}
	recErr := created.wait(ctx)
	if err == nil {
		_, err = pubAck(ctx, request)
	}
	if err == nil {
		_, err = pubAck(ctx, queued)
	}
	switch {
	case recErr != nil:
		c.withdraw(ctx, rec, recErr)
		return recErr
	case err != nil:
		c.fail(ctx, rec, fmt.Sprintf("could not queue the job: %v", err))
		return err
	}
	return nil
}

// withdraw takes back a job whose record could not be stored: its request
// leaves the queue, an agent that took it already is told to stop it, and
// its events end with its failure.
func (c *Coordinator) withdraw(ctx context.Context, rec subjects.Record, why error) {
	// The submit's own deadline may be what failed the record.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	if err := c.dequeue(ctx, rec); err != nil {
		c.log.Warn("could not take back the request of a job without a record", "job", rec.ID, "err", err)
	}
	if err := c.control(&rec, subjects.StopRequest{ID: rec.ID, Force: true}); err != nil {
		c.log.Warn("could not stop a job without a record", "job", rec.ID, "err", err)
	}
	ev := subjects.StatusEvent{Job: rec.ID, State: subjects.StateFailed, Attempt: rec.Attempt, Error: fmt.Sprintf("could not record the job: %v", why), At: time.Now().UTC()}
	if err := c.publishStatus(ctx, rec, ev); err != nil {
		c.log.Warn("could not publish failed status", "job", rec.ID, "err", err)
	}
}

// pubAck waits for a publish's ack.
func pubAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Coordinator) knownTag(ctx context.Context, tag string) error {
	if _, ok := c.tags.Load(tag); ok {
		return nil
	}
	_, err := c.js.Consumer(ctx, subjects.JobsStream, subjects.AgentsConsumer(tag))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return subjects.Errorf(subjects.CodeUnknownTag, "no agent serves tag %q: issue an agent credential for it first ('outpost admin agent add NAME --tag %s')", tag, tag)
	}
	if err != nil {
		return fmt.Errorf("look up tag %s: %w", tag, err)
	}
	c.tags.Store(tag, struct{}{})
	return nil
}

func (c *Coordinator) publishJob(ctx context.Context, job subjects.Job) error {
	m, err := c.jobMsg(job)
	if err != nil {
		return err
	}
	_, err = c.js.PublishMsg(ctx, m, jetstream.WithMsgID(subjects.MsgID(job.ID, job.Attempt, "job")))
	return err
}

// jobMsg is the request of a job, as agents get it.
func (c *Coordinator) jobMsg(job subjects.Job) (*nats.Msg, error) {
	b, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(subjects.JobSubject(job.Tag, job.ID))
	m.Data = b
	// Agents cannot ask JetStream about the consumer (their accounts have no
	// JetStream API), so each job says how often to report progress.
	m.Header.Set(subjects.HeaderAckWait, c.limits.AckWait.String())
	return m, nil
}

// publishStatus stores a status event the coordinator itself decides
// (queued, a stop before any agent took the job, a failure to queue).
func (c *Coordinator) publishStatus(ctx context.Context, rec subjects.Record, ev subjects.StatusEvent) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = c.js.Publish(ctx, subjects.EventSubject(rec.Tag, rec.Owner, rec.ID, subjects.KindStatus), b,
		jetstream.WithMsgID(subjects.MsgID(rec.ID, ev.Attempt, string(ev.State))))
	return err
}

// fail ends a job that could not be queued.
func (c *Coordinator) fail(ctx context.Context, rec subjects.Record, reason string) {
	// The submit's own deadline may be what failed the request.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	ev := subjects.StatusEvent{Job: rec.ID, State: subjects.StateFailed, Attempt: rec.Attempt, Error: reason, At: time.Now().UTC()}
	if _, _, err := c.jobs.update(ctx, rec.ID, func(r *subjects.Record) bool { return r.Apply(ev) }); err != nil {
		c.log.Error("could not mark job failed", "job", rec.ID, "err", err)
	}
	if err := c.publishStatus(ctx, rec, ev); err != nil {
		c.log.Warn("could not publish failed status", "job", rec.ID, "err", err)
	}
}

// visible reports whether who may read rec.
func visible(who caller, rec *subjects.Record) bool {
	switch who.role {
	case accounts.RoleAdmin:
		return true
	case accounts.RoleUser:
		return rec.Owner == who.name
	case accounts.RoleObserver:
		return who.hasTag(rec.Tag)
	}
	return false
}

func (c *Coordinator) get(ctx context.Context, who caller, req subjects.GetRequest) (*subjects.Record, error) {
	if err := subjects.ValidJobID(req.ID); err != nil {
		return nil, subjects.Errorf(subjects.CodeBadRequest, "%v", err)
	}
	rec, _, err := c.jobs.get(ctx, req.ID)
	if errors.Is(err, errNoRecord) || (err == nil && !visible(who, &rec)) {
		// A job another user owns is reported as missing, so IDs cannot be probed.
		return nil, subjects.Errorf(subjects.CodeNotFound, "no job %s (see 'outpost ls')", req.ID)
	}
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

func (c *Coordinator) list(ctx context.Context, who caller, req subjects.ListRequest) ([]subjects.Record, error) {
	if req.Tag != "" {
		if err := subjects.ValidTag(req.Tag); err != nil {
			return nil, subjects.Errorf(subjects.CodeBadRequest, "%v", err)
		}
	}
	if req.Owner != "" {
		if err := subjects.ValidName(req.Owner); err != nil {
			return nil, subjects.Errorf(subjects.CodeBadRequest, "%v", err)
		}
	}
	if req.State != "" {
		if _, err := subjects.ParseState(string(req.State)); err != nil {
			return nil, subjects.Errorf(subjects.CodeBadRequest, "%v", err)
		}
	}
	limit := req.Limit
	if limit <= 0 {
		limit = defaultList
	}
	limit = min(limit, maxList)
	return c.jobs.list(ctx, func(r *subjects.Record) bool {
		return visible(who, r) &&
			(req.Tag == "" || r.Tag == req.Tag) &&
			(req.State == "" || r.State == req.State) &&
			(req.Owner == "" || r.Owner == req.Owner)
	}, limit)
}

// stop ends a job in any state. A queued job is taken off the queue and
// marked stopped at once; a running one is told to stop through its tag's
// control subject, and its agent reports the end.
func (c *Coordinator) stop(ctx context.Context, who caller, req subjects.StopRequest) (*subjects.Record, error) {
	if who.role != accounts.RoleAdmin && who.role != accounts.RoleUser {
		return nil, forbidden(who, "stop jobs")
	}
	rec, err := c.get(ctx, who, subjects.GetRequest{ID: req.ID})
	if err != nil {
		return nil, err
	}
	if rec.State.Terminal() {
		return nil, subjects.Errorf(subjects.CodeConflict, "job %s already ended: %s", rec.ID, rec.State)
	}
	if rec.State == subjects.StateQueued {
		ev := subjects.StatusEvent{Job: rec.ID, State: subjects.StateStopped, Attempt: rec.Attempt, Error: "stopped by " + who.name + " before it started", At: time.Now().UTC()}
		updated, changed, err := c.jobs.update(ctx, rec.ID, func(r *subjects.Record) bool {
			return r.State == subjects.StateQueued && r.Apply(ev)
		})
		if err != nil {
			return nil, err
		}
		if !changed && !updated.State.Terminal() {
			// It started meanwhile: ask its agent, as for any running job.
			updated, _, err = c.jobs.update(ctx, rec.ID, func(r *subjects.Record) bool {
				r.StopRequested = true
				return !r.State.Terminal()
			})
			if err != nil {
				return nil, err
			}
		}
		if changed {
			if err := c.dequeue(ctx, *rec); err != nil {
				c.log.Warn("could not take stopped job off the queue; its agent will be told to stop it", "job", rec.ID, "err", err)
			}
			if err := c.publishStatus(ctx, updated, ev); err != nil {
				c.log.Warn("could not publish stopped status", "job", rec.ID, "err", err)
			}
		}
		rec = &updated
	} else {
		updated, _, err := c.jobs.update(ctx, rec.ID, func(r *subjects.Record) bool {
			if r.StopRequested {
				return false
			}
			r.StopRequested = true
			return true
		})
		if err != nil {
			return nil, err
		}
		rec = &updated
	}
	// Sent in every case: an agent may have taken the job a moment ago.
	if err := c.control(rec, req); err != nil {
		return nil, err
	}
	c.log.Info("job stop requested", "job", rec.ID, "by", who.name, "force", req.Force)
	return rec, nil
}

// control tells the agents of a job's tag to stop it. The reply subject
// lies in the coordinator's inbox: agents obey nothing else, so a stream
// message redirected onto a control subject is ignored.
func (c *Coordinator) control(rec *subjects.Record, req subjects.StopRequest) error {
	b, err := json.Marshal(subjects.ControlMsg{Action: subjects.ActionStop, Job: rec.ID, Force: req.Force, Grace: req.Grace})
	if err != nil {
		return err
	}
	m := &nats.Msg{Subject: subjects.ControlSubject(rec.Tag, rec.ID), Reply: subjects.Inbox(subjects.CoordinatorName) + ".ctl", Data: b}
	if err := c.conn.PublishMsg(m); err != nil {
		return fmt.Errorf("send stop for job %s: %w", rec.ID, err)
	}
	return nil
}
