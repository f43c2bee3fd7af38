package coordinator

import (
	"encoding/json"
	"time"

	"github.com/outpost-run/outpost/subjects"
)

// audit records an API call in the audit stream: who, what, when, and the
// result. It does not wait for the store's ack, so auditing adds no round
// trip to a call; a failure to store is logged.
func (c *Coordinator) audit(who caller, name, verb, target string, reply subjects.Reply) {
	e := subjects.AuditEntry{At: time.Now().UTC(), Caller: name, Role: string(who.role), Verb: verb, Target: target, Result: "ok"}
	if reply.Job != nil {
		e.Tag = reply.Job.Tag
	}
	if reply.Error != nil {
		e.Result, e.Message = string(reply.Error.Code), reply.Error.Message
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	f, err := c.js.PublishAsync(subjects.AuditSubject(name, verb), b)
	if err != nil {
		c.log.Error("audit record not stored", "caller", name, "verb", verb, "err", err)
		return
	}
	go func() {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			c.log.Error("audit record not stored", "caller", name, "verb", verb, "err", err)
		}
	}()
}
