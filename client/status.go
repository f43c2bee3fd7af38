package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/outpost-run/outpost/subjects"
)

// LastStatus returns the last status event stored for a job, or nil if it
// has none. It is a direct get of the job's status subject from the events
// stream, which an agent's account imports for its own tags only (the
// server reads the subject from the request's, and refuses a body that
// names another): an agent handed a job again asks it whether the job has
// ended meanwhile, before it runs it.
func (c *Conn) LastStatus(ctx context.Context, tag, owner, id string) (*subjects.StatusEvent, error) {
	ctx, stop := c.cancelOnDenial(ctx)
	defer stop()
	subj := c.jsAPI + "DIRECT.GET." + subjects.EventsStream + "." + subjects.EventSubject(tag, owner, id, subjects.KindStatus)
	m, err := c.RequestWithContext(ctx, subj, nil)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("last status of job %s: nothing answers on %s", id, subj)
		}
		return nil, fmt.Errorf("last status of job %s: %w", id, c.explain(err))
	}
	switch status := m.Header.Get(statusHdr); status {
	case "":
	case "404":
		return nil, nil
	default:
		return nil, fmt.Errorf("last status of job %s: the server answered %s %s", id, status, m.Header.Get(descrHdr))
	}
	var ev subjects.StatusEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Job != id {
		return nil, fmt.Errorf("last status of job %s: malformed event (%v)", id, err)
	}
	return &ev, nil
}
