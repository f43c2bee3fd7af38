package accounts

import (
	"fmt"
	"strconv"

	"github.com/nats-io/jwt/v2"

	"github.com/outpost-run/outpost/subjects"
)

// Role is what a credential is for. Each role has its own signing key in
// the OUTPOST account, and the key's template holds the role's permissions.
type Role string

// Roles.
const (
	RoleAdmin       Role = "admin"
	RoleUser        Role = "user"
	RoleObserver    Role = "observer"
	RoleAgent       Role = "agent"
	RoleCoordinator Role = "coordinator"
)

// Roles lists every role, in the order keys are made.
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
// for tags gpu and cpu carries the JWT tags "pool:gpu" and "pool:cpu", and
// templates use {{tag(pool)}}.
const TagKey = "pool"

const (
	nameT = "{{name()}}"
	tagT  = "{{tag(" + TagKey + ")}}"
	jsAPI = "$JS.API.CONSUMER."
)

// Permissions is the template a role's signing key carries. The server
// expands {{name()}} and {{tag(pool)}} per user, so one template serves
// every credential of the role.
func Permissions(r Role) jwt.Permissions {
	var p jwt.Permissions
	inbox := subjects.Inbox(nameT) + ".>"
	switch r {
	case RoleCoordinator:
		p.Pub.Allow.Add(">")
		p.Sub.Allow.Add(">")
	case RoleAgent:
		consumer := subjects.JobsStream + "." + subjects.AgentsConsumer(tagT)
		p.Pub.Allow.Add(
			jsAPI+"INFO."+consumer,
			jsAPI+"MSG.NEXT."+consumer,
			"$JS.ACK."+consumer+".>",
			subjects.EventsPrefix+"."+tagT+".*.*."+string(subjects.KindStatus),
			subjects.EventsPrefix+"."+tagT+".*.*."+string(subjects.KindLog),
			subjects.HeartbeatSubject(tagT, nameT),
		)
		p.Sub.Allow.Add(inbox, subjects.ControlFilter(tagT))
	case RoleAdmin:
		// Stream info lists every job's subject on request, so only admins,
		// who may read everything anyway, get it: 'nats consumer add' needs it.
		p.Pub.Allow.Add(subjects.APISubject(nameT, ">"), "$JS.API.STREAM.INFO."+subjects.EventsStream)
		p.Pub.Allow.Add(readerPub(subjects.EventsStream, subjects.EventsPrefix+".>")...)
		p.Pub.Allow.Add(readerPub(subjects.AuditStream, subjects.AuditPrefix+".>")...)
		p.Sub.Allow.Add(inbox, subjects.EventsPrefix+".>")
	case RoleUser:
		own := subjects.EventsPrefix + ".*." + nameT + ".>"
		p.Pub.Allow.Add(subjects.APISubject(nameT, ">"))
		p.Pub.Allow.Add(readerPub(subjects.EventsStream, own)...)
		p.Sub.Allow.Add(inbox, own)
	case RoleObserver:
		// Observers are also the auditors: they read the whole audit trail.
		tags := subjects.EventsPrefix + "." + tagT + ".>"
		p.Pub.Allow.Add(readerPub(subjects.EventsStream, tags)...)
		p.Pub.Allow.Add(readerPub(subjects.AuditStream, subjects.AuditPrefix+".>")...)
		p.Sub.Allow.Add(inbox, tags)
	}
	return p
}

// readerPub allows a reader to create, read, inspect and delete the replay
// consumers of stream pinned to its own name, filtered inside scope, and
// nothing else of the JetStream API (NATS-NOTES point 4).
func readerPub(stream, scope string) []string {
	var out []string
	for slot := 1; slot <= subjects.ReaderSlots; slot++ {
		c := stream + ".r_" + nameT + "_" + strconv.Itoa(slot)
		out = append(out,
			jsAPI+"CREATE."+c+"."+scope,
			jsAPI+"MSG.NEXT."+c,
			jsAPI+"INFO."+c,
			jsAPI+"DELETE."+c,
		)
	}
	return out
}
