package accounts

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/outpost-run/outpost/subjects"
)

// Role is what a credential is for. It decides what the credential's own
// account imports from OUTPOST, and so what exists for it at all.
type Role string

// Roles.
const (
	RoleAdmin       Role = "admin"
	RoleUser        Role = "user"
	RoleObserver    Role = "observer"
	RoleAgent       Role = "agent"
	RoleCoordinator Role = "coordinator"
)

// Roles lists every role.
var Roles = []Role{RoleAdmin, RoleUser, RoleObserver, RoleAgent, RoleCoordinator}

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown role %q (want admin, user, observer or agent)", s)
}

// TagKey is the JWT tag key that carries a credential's tags: a credential
// for tags gpu and cpu carries the JWT tags "pool:gpu" and "pool:cpu".
const TagKey = "pool"

// pullReplyWindow is how long the reply path of a pull request stays open.
const pullReplyWindow = 10 * time.Minute

const (
	msgNext      = "$JS.API.CONSUMER.MSG.NEXT."
	consumerInfo = "$JS.API.CONSUMER.INFO."
	jsAck        = "$JS.ACK."
	// A direct get of the last message on a subject of the events stream:
	// the server takes the subject from the request's and refuses a body
	// that asks for any other.
	lastStatus = "$JS.API.DIRECT.GET." + subjects.EventsStream + "."
)

// workExports are what the OUTPOST account, which holds JetStream and the
// coordinator, offers the credentials' accounts. Each credential's account
// imports the slice of these its role needs (see reach).
//
// Only the consumer pull and ack subjects of JetStream, and direct gets of
// job statuses, are exported: they are served by the consumers and the
// stream themselves, in OUTPOST. Any other JetStream
// API request made through an import acts on the requester's own account,
// which has no JetStream, so readers ask the coordinator for their
// consumers instead.
func workExports() jwt.Exports {
	return jwt.Exports{
		// The API: Share, set on the import, makes the server stamp each
		// request with the caller's verified identity.
		{Name: "api", Subject: subjects.APIAll, Type: jwt.Service},
		// A pull request has many replies: the messages, then a status.
		// An idle agent's pull waits minutes for a job, so its reply path
		// must outlive the default two minutes (agent package, pullWait).
		{Name: "pull", Subject: msgNext + ">", Type: jwt.Service, ResponseType: jwt.ResponseTypeStream, ResponseThreshold: pullReplyWindow},
		{Name: "ack", Subject: jsAck + ">", Type: jwt.Service},
		// An agent handed a job again reads its last status first, to leave
		// alone a job that has ended meanwhile.
		{Name: "last-status", Subject: jwt.Subject(lastStatus + subjects.AllStatus), Type: jwt.Service},
		// Agents publish events into the stream; the reply is the stream's ack.
		{Name: "events", Subject: subjects.EventsPrefix + ".>", Type: jwt.Service},
		{Name: "heartbeats", Subject: subjects.HeartbeatPfx + ".>", Type: jwt.Service},
		// The events stream republishes what it stored here, for live followers.
		{Name: "live", Subject: subjects.LivePrefix + ".>", Type: jwt.Stream},
		{Name: "control", Subject: subjects.ControlPrefix + ".>", Type: jwt.Stream},
	}
}

// reach is what one credential may reach in OUTPOST: the subjects it sends
// to (imported services) and those it hears from (imported streams).
type reach struct {
	send, hear []string
}

// reachOf is the whole of what a credential of role may do, given its name
// and tags. Its own account imports exactly this, and its user JWT is
// permitted exactly this (plus its inbox), so each is a check on the other.
func reachOf(role Role, name string, tags []string) reach {
	var r reach
	readers := func(streams ...string) {
		// Each slot by name: a '*' inside a token is no wildcard.
		for _, s := range streams {
			for slot := 1; slot <= subjects.ReaderSlots; slot++ {
				r.send = append(r.send, msgNext+s+"."+subjects.ReaderConsumer(name, slot))
			}
		}
	}
	switch role {
	case RoleAgent:
		for _, t := range tags {
			consumer := subjects.JobsStream + "." + subjects.AgentsConsumer(t)
			r.send = append(r.send,
				msgNext+consumer,
				jsAck+consumer+".>",
				lastStatus+subjects.EventSubject(t, "*", "*", subjects.KindStatus),
				subjects.EventSubject(t, "*", "*", subjects.KindStatus),
				subjects.EventSubject(t, "*", "*", subjects.KindLog),
				subjects.HeartbeatSubject(t, name),
			)
			r.hear = append(r.hear, subjects.ControlFilter(t))
		}
	case RoleUser:
		r.send = append(r.send, subjects.APISubject(name, "*"))
		readers(subjects.EventsStream)
		for _, t := range tags {
			r.hear = append(r.hear, subjects.LiveFilter(t, name))
		}
	case RoleObserver:
		// Observers are also the auditors: they read the whole audit trail.
		r.send = append(r.send, subjects.APISubject(name, "*"))
		readers(subjects.EventsStream, subjects.AuditStream)
		for _, t := range tags {
			r.hear = append(r.hear, subjects.LiveFilter(t, "*"))
		}
	case RoleAdmin:
		r.send = append(r.send, subjects.APISubject(name, "*"))
		readers(subjects.EventsStream, subjects.AuditStream)
		r.hear = append(r.hear, subjects.LivePrefix+".>")
	}
	return r
}

// imports turns a reach into the imports of a credential's account.
func (r reach) imports(work string) jwt.Imports {
	var im jwt.Imports
	for _, s := range r.send {
		im.Add(&jwt.Import{Name: s, Subject: jwt.Subject(s), Account: work, Type: jwt.Service,
			// Only the API needs the caller's identity; JetStream has no use for it.
			Share: strings.HasPrefix(s, subjects.APIPrefix+".")})
	}
	for _, s := range r.hear {
		im.Add(&jwt.Import{Name: s, Subject: jwt.Subject(s), Account: work, Type: jwt.Stream})
	}
	return im
}

// Permissions is what a credential of role may publish and subscribe to:
// its reach and its private inbox. The coordinator's own credential may do
// anything in OUTPOST.
func Permissions(role Role, name string, tags []string) jwt.Permissions {
	var p jwt.Permissions
	if role == RoleCoordinator {
		p.Pub.Allow.Add(">")
		p.Sub.Allow.Add(">")
		return p
	}
	r := reachOf(role, name, tags)
	p.Pub.Allow.Add(r.send...)
	// Tools such as 'nats consumer next' ask for a consumer's info first.
	// The account imports no such thing, so the server's JetStream answers
	// for the asker's own account, which has none: permitting the publish
	// turns a denial the tool waits out into an instant "JetStream not
	// enabled for account", which it passes over.
	for _, s := range r.send {
		if strings.HasPrefix(s, msgNext) {
			p.Pub.Allow.Add(consumerInfo + strings.TrimPrefix(s, msgNext))
		}
	}
	p.Sub.Allow.Add(subjects.Inbox(name) + ".>")
	p.Sub.Allow.Add(r.hear...)
	return p
}
