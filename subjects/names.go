package subjects

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Streams, consumers and buckets.
const (
	// JobsStream is the work-queue stream that carries job requests.
	JobsStream = "OUTPOST_JOBS"
	// EventsStream carries every job's status events and log lines.
	EventsStream = "OUTPOST_EVENTS"
	// JobsBucket is the KV bucket of job records, keyed by job ID.
	JobsBucket = "outpost_jobs"
	// CredsBucket is the KV bucket of issued credentials, keyed by name.
	CredsBucket = "outpost_creds"
	// CoordinatorConsumer is the coordinator's durable consumer of status events.
	CoordinatorConsumer = "coordinator"
	// CoordinatorName is the credential name of the coordinator itself. It is
	// reserved: no other credential may carry it.
	CoordinatorName = "coordinator"
	// ReaderSlots is how many replay consumers each reader may hold at once.
	ReaderSlots = 4
)

// Subject roots.
const (
	Root          = "outpost"
	APIPrefix     = Root + ".api"
	JobsPrefix    = Root + ".jobs"
	EventsPrefix  = Root + ".ev"
	ControlPrefix = Root + ".ctl"
	HeartbeatPfx  = Root + ".hb"
	// LivePrefix is where the events stream republishes each event it
	// stored, under the same tokens: outpost.live.<tag>.<owner>.<job>.<kind>.
	// Live followers subscribe here, and see each event once.
	LivePrefix   = Root + ".live"
	inboxPrefix  = "_INBOX_"
	statusSuffix = "status"
	logSuffix    = "log"
)

// API verbs.
const (
	VerbSubmit = "submit"
	VerbGet    = "get"
	VerbList   = "list"
	VerbStop   = "stop"
	// VerbRead asks for a replay consumer over a job's events or the audit
	// trail; VerbRelease gives it back.
	VerbRead    = "read"
	VerbRelease = "release"
	// VerbAgents lists the online agents of a tag with their curve keys,
	// to seal a job's secrets to.
	VerbAgents = "agents"
)

// Verbs lists every API verb the coordinator answers.
var Verbs = []string{VerbSubmit, VerbGet, VerbList, VerbStop, VerbRead, VerbRelease, VerbAgents, VerbIssue, VerbRevoke, VerbCreds}

var (
	tokenRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
	jobRE   = regexp.MustCompile(`^[0-9a-z]{26}$`)
)

// ValidName reports whether s may be used as a credential name: 1 to 64 of
// a-z, 0-9, '_' and '-'. Names are pasted into permission templates by the
// server unchecked, so nothing else may ever be signed.
func ValidName(s string) error {
	if !tokenRE.MatchString(s) {
		return fmt.Errorf("%w: name %q must be 1-64 characters of a-z, 0-9, '_' or '-'", ErrBadToken, s)
	}
	return nil
}

// ValidTag reports whether s may be used as a tag (a pool of agents).
func ValidTag(s string) error {
	if !tokenRE.MatchString(s) {
		return fmt.Errorf("%w: tag %q must be 1-64 characters of a-z, 0-9, '_' or '-'", ErrBadToken, s)
	}
	return nil
}

// ValidJobID reports whether s has the shape of a job ID: 26 characters of
// lower-case Crockford base32 (a lower-cased ULID), so IDs sort by time.
func ValidJobID(s string) error {
	if !jobRE.MatchString(s) {
		return fmt.Errorf("%w: job ID %q is not 26 characters of 0-9 and a-z (see 'outpost ls')", ErrBadToken, s)
	}
	return nil
}

// Inbox is the private inbox prefix of the credential called name. Only that
// credential may subscribe below it, so replies cannot be read by others.
func Inbox(name string) string { return inboxPrefix + name }

// InInbox reports whether reply lies inside name's inbox prefix.
func InInbox(reply, name string) bool {
	return strings.HasPrefix(reply, Inbox(name)+".")
}

// APISubject is the subject on which name asks the coordinator to do verb.
func APISubject(name, verb string) string { return APIPrefix + "." + name + "." + verb }

// APIAll is the coordinator's subscription to every API request.
const APIAll = APIPrefix + ".*.*"

// ParseAPI splits an API subject into the requester's name and the verb. It
// refuses any subject that is not exactly outpost.api.<name>.<verb> with a
// valid name and a known verb.
func ParseAPI(subject string) (name, verb string, err error) {
	t, err := tokens(subject, "api", "outpost.api.<name>.<verb>", 2)
	if err == nil {
		err = ValidName(t[0])
	}
	if err != nil {
		return "", "", err
	}
	for _, v := range Verbs {
		if t[1] == v {
			return t[0], v, nil
		}
	}
	return "", "", fmt.Errorf("%w: unknown verb %q (want one of %s)", ErrBadSubject, t[1], strings.Join(Verbs, ", "))
}

// JobSubject is the subject a job request for tag is published on.
func JobSubject(tag, id string) string { return JobsPrefix + "." + tag + "." + id }

// JobsHead is the subject of the one message in the jobs stream that is no
// job: it is stored first and never goes, which keeps the stream's first
// sequence below every job's. It has a token fewer than a job subject, so
// no tag's filter matches it.
const JobsHead = JobsPrefix + "._head"

// JobsFilter matches every job request of tag.
func JobsFilter(tag string) string { return JobsPrefix + "." + tag + ".>" }

// AgentsConsumer is the durable pull consumer all agents of tag share.
func AgentsConsumer(tag string) string { return "agents-" + tag }

// ParseJob splits a job subject into tag and job ID.
func ParseJob(subject string) (tag, id string, err error) {
	return tagAndID(subject, "jobs", "outpost.jobs.<tag>.<job>")
}

// EventKind tells a status event from a log message.
type EventKind string

const (
	KindStatus EventKind = statusSuffix
	KindLog    EventKind = logSuffix
)

// EventSubject is the subject of a job's status events or log lines.
func EventSubject(tag, owner, id string, kind EventKind) string {
	return EventsPrefix + "." + tag + "." + owner + "." + id + "." + string(kind)
}

// JobEvents matches all events of one job: the filter a replay consumer uses.
func JobEvents(tag, owner, id string) string {
	return EventsPrefix + "." + tag + "." + owner + "." + id + ".>"
}

// AllStatus matches every status event of every job.
const AllStatus = EventsPrefix + ".*.*.*." + statusSuffix

// Event is a parsed event subject.
type Event struct {
	Tag, Owner, Job string
	Kind            EventKind
}

// ParseEvent splits an event subject. It refuses anything but the exact
// shape outpost.ev.<tag>.<owner>.<job>.status|log.
func ParseEvent(subject string) (Event, error) { return parseEvent(subject, "ev") }

// ParseLive splits the live copy of an event subject:
// outpost.live.<tag>.<owner>.<job>.status|log.
func ParseLive(subject string) (Event, error) { return parseEvent(subject, "live") }

func parseEvent(subject, kind string) (Event, error) {
	t, err := tokens(subject, kind, "outpost."+kind+".<tag>.<owner>.<job>.<kind>", 4)
	if err != nil {
		return Event{}, err
	}
	e := Event{Tag: t[0], Owner: t[1], Job: t[2], Kind: EventKind(t[3])}
	if err := first(ValidTag(e.Tag), ValidName(e.Owner), ValidJobID(e.Job)); err != nil {
		return Event{}, err
	}
	if e.Kind != KindStatus && e.Kind != KindLog {
		return Event{}, fmt.Errorf("%w: %q ends in neither status nor log", ErrBadSubject, subject)
	}
	return e, nil
}

// LiveSubject is the live copy of EventSubject(tag, owner, id, kind).
func LiveSubject(tag, owner, id string, kind EventKind) string {
	return LivePrefix + "." + tag + "." + owner + "." + id + "." + string(kind)
}

// LiveFilter matches the live copies of the events of tag and owner, either
// of which may be "*".
func LiveFilter(tag, owner string) string { return LivePrefix + "." + tag + "." + owner + ".>" }

// ControlSubject is the subject on which the coordinator tells the agents of tag
// to act on a job (stop it).
func ControlSubject(tag, id string) string { return ControlPrefix + "." + tag + "." + id }

// ControlFilter matches every control message of tag.
func ControlFilter(tag string) string { return ControlPrefix + "." + tag + ".*" }

// ParseControl splits a control subject into tag and job ID.
func ParseControl(subject string) (tag, id string, err error) {
	return tagAndID(subject, "ctl", "outpost.ctl.<tag>.<job>")
}

// HeartbeatSubject is the subject an agent announces itself on, once per tag.
func HeartbeatSubject(tag, agent string) string { return HeartbeatPfx + "." + tag + "." + agent }

// HeartbeatAll matches every agent's heartbeat.
const HeartbeatAll = HeartbeatPfx + ".*.*"

// ParseHeartbeat splits a heartbeat subject into tag and agent name.
func ParseHeartbeat(subject string) (tag, agent string, err error) {
	t, err := tokens(subject, "hb", "outpost.hb.<tag>.<agent>", 2)
	if err == nil {
		err = first(ValidTag(t[0]), ValidName(t[1]))
	}
	if err != nil {
		return "", "", err
	}
	return t[0], t[1], nil
}

// ReaderConsumer is the name of a reader's replay consumer in slot (1 to
// ReaderSlots). Permissions pin readers to these names, so no reader can
// touch another's consumer or the coordinator's.
func ReaderConsumer(name string, slot int) string {
	return "r_" + name + "_" + strconv.Itoa(slot)
}

// ReaderOf reports whether consumer is one of name's reader consumers.
func ReaderOf(consumer, name string) bool {
	for slot := 1; slot <= ReaderSlots; slot++ {
		if consumer == ReaderConsumer(name, slot) {
			return true
		}
	}
	return false
}

// MsgID is the de-duplication ID of a job's message: the status of a state,
// or the log message whose first line is seq.
func MsgID(job string, attempt int, part string) string {
	return job + "." + strconv.Itoa(attempt) + "." + part
}

// tokens splits subject and checks that it is outpost.<kind> followed by n
// more tokens, which it returns; shape names the expected form in errors.
func tokens(subject, kind, shape string, n int) ([]string, error) {
	t := strings.Split(subject, ".")
	if len(t) != n+2 || t[0] != Root || t[1] != kind {
		return nil, fmt.Errorf("%w: %q is not %s", ErrBadSubject, subject, shape)
	}
	return t[2:], nil
}

// tagAndID parses outpost.<kind>.<tag>.<job>.
func tagAndID(subject, kind, shape string) (tag, id string, err error) {
	t, err := tokens(subject, kind, shape, 2)
	if err == nil {
		err = first(ValidTag(t[0]), ValidJobID(t[1]))
	}
	if err != nil {
		return "", "", err
	}
	return t[0], t[1], nil
}

// first returns the first non-nil error.
func first(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
