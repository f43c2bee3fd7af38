package subjects_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-run/outpost/subjects"
)

const job = "01jd7x3k9q8r6t5v4w3y2z1a0b" // a lower-cased ULID

// badTokens are refused as names and as tags: each would change the shape
// of a permission subject the server pastes it into, or is simply not a
// token of [a-z0-9_-]{1,64}.
var badTokens = []string{
	"",
	"alice.evil",
	"pool:*",
	"*",
	">",
	"a>",
	"a*",
	"Alice",
	"ALICE",
	strings.Repeat("a", 65),
	"ålice",
	"аlice", // Cyrillic а
	"alice bob",
	"alice\n",
	"alice\t",
	"al\x00ice",
	"a/b",
	"a\\b",
	"$SYS",
	"_INBOX.x",
	"{{name()}}",
	"\xff",
}

var goodTokens = []string{
	"a",
	"0",
	"alice",
	"local-agent",
	"gpu_2",
	"-",
	"_",
	"coordinator", // a valid token; reserving it is the accounts package's job
	strings.Repeat("a", 64),
	strings.Repeat("z9_-", 16),
}

func TestValidNameAndTag(t *testing.T) {
	for _, fn := range []struct {
		what  string
		valid func(string) error
	}{{"name", subjects.ValidName}, {"tag", subjects.ValidTag}} {
		for _, s := range goodTokens {
			if err := fn.valid(s); err != nil {
				t.Errorf("%s %q refused: %v", fn.what, s, err)
			}
		}
		for _, s := range badTokens {
			err := fn.valid(s)
			if err == nil {
				t.Errorf("%s %q accepted", fn.what, s)
				continue
			}
			if !errors.Is(err, subjects.ErrBadToken) {
				t.Errorf("%s %q: error %v is not ErrBadToken", fn.what, s, err)
			}
			if !strings.Contains(err.Error(), strconv.Quote(s)) || !strings.Contains(err.Error(), fn.what) {
				t.Errorf("%s %q: error %q does not name the %s and its value", fn.what, s, err, fn.what)
			}
		}
	}
}

func TestValidJobID(t *testing.T) {
	for _, s := range []string{job, strings.Repeat("0", 26), strings.Repeat("z", 26)} {
		if err := subjects.ValidJobID(s); err != nil {
			t.Errorf("job ID %q refused: %v", s, err)
		}
	}
	for _, s := range []string{
		"",
		strings.ToUpper(job),
		job[:25],
		job + "0",
		job[:25] + ".",
		job[:25] + "*",
		job[:25] + ">",
		job[:25] + " ",
		job[:25] + "-",
		job[:25] + "_",
		job[:24] + "é",
		"alice",
		job + ".status",
	} {
		err := subjects.ValidJobID(s)
		if err == nil {
			t.Errorf("job ID %q accepted", s)
			continue
		}
		if !errors.Is(err, subjects.ErrBadToken) || !strings.Contains(err.Error(), strconv.Quote(s)) {
			t.Errorf("job ID %q: error %q is not an ErrBadToken naming the value", s, err)
		}
	}
}

func TestAPISubjectRoundTrip(t *testing.T) {
	for _, name := range goodTokens {
		for _, verb := range subjects.Verbs {
			s := subjects.APISubject(name, verb)
			if !match(subjects.APIAll, s) {
				t.Errorf("%s does not match %s", s, subjects.APIAll)
			}
			n, v, err := subjects.ParseAPI(s)
			if err != nil || n != name || v != verb {
				t.Errorf("ParseAPI(%q) = %q, %q, %v", s, n, v, err)
			}
		}
	}
}

func TestParseAPIRefuses(t *testing.T) {
	for _, s := range []string{
		"",
		".",
		"outpost.api",
		"outpost.api.alice",
		"outpost.api.alice.submit.x",
		"outpost.api.alice.submit.",
		"outpost.api..submit",
		"outpost.api.Alice.submit",
		"outpost.api.*.submit",
		"outpost.api.>",
		"outpost.api.alice.*",
		"outpost.api.alice.>",
		"outpost.api.alice.delete",
		"outpost.api.alice.SUBMIT",
		"outpost.apix.alice.submit",
		"outpost.jobs.alice.submit",
		"outposts.api.alice.submit",
		"x.outpost.api.alice.submit",
		".outpost.api.alice",
		"outpost.api.alice.evil.submit", // a dotted name is two tokens
		"outpost.ev.a.alice." + job + ".status",
	} {
		if n, v, err := subjects.ParseAPI(s); err == nil {
			t.Errorf("ParseAPI(%q) accepted: %q, %q", s, n, v)
		}
	}
}

func TestJobSubjectRoundTrip(t *testing.T) {
	for _, tag := range goodTokens {
		s := subjects.JobSubject(tag, job)
		if !match(subjects.JobsFilter(tag), s) || !match(subjects.JobsPrefix+".>", s) {
			t.Errorf("%s does not match %s", s, subjects.JobsFilter(tag))
		}
		gt, id, err := subjects.ParseJob(s)
		if err != nil || gt != tag || id != job {
			t.Errorf("ParseJob(%q) = %q, %q, %v", s, gt, id, err)
		}
	}
	if match(subjects.JobsFilter("a"), subjects.JobSubject("ab", job)) {
		t.Error("the jobs filter of tag a matches jobs of tag ab")
	}
	if got := subjects.AgentsConsumer("gpu"); got != "agents-gpu" {
		t.Errorf("AgentsConsumer(gpu) = %q", got)
	}
}

func TestEventSubjectRoundTrip(t *testing.T) {
	for _, tag := range []string{"a", "gpu_2", strings.Repeat("t", 64)} {
		for _, owner := range []string{"alice", "local-agent", strings.Repeat("o", 64)} {
			for _, kind := range []subjects.EventKind{subjects.KindStatus, subjects.KindLog} {
				s := subjects.EventSubject(tag, owner, job, kind)
				if !match(subjects.JobEvents(tag, owner, job), s) {
					t.Errorf("%s does not match the job's filter %s", s, subjects.JobEvents(tag, owner, job))
				}
				if got := match(subjects.AllStatus, s); got != (kind == subjects.KindStatus) {
					t.Errorf("%s matches %s: %v", s, subjects.AllStatus, got)
				}
				e, err := subjects.ParseEvent(s)
				want := subjects.Event{Tag: tag, Owner: owner, Job: job, Kind: kind}
				if err != nil || e != want {
					t.Errorf("ParseEvent(%q) = %+v, %v", s, e, err)
				}
			}
		}
	}
	other := strings.Repeat("1", 26)
	if match(subjects.JobEvents("a", "alice", job), subjects.EventSubject("a", "alice", other, subjects.KindLog)) {
		t.Error("one job's filter matches another job's events")
	}
	if match(subjects.JobEvents("a", "alice", job), subjects.EventSubject("a", "bob", job, subjects.KindLog)) {
		t.Error("one owner's filter matches another owner's events")
	}
}

func TestParseEventRefuses(t *testing.T) {
	for _, s := range []string{
		"",
		"outpost.ev.a.alice." + job,
		"outpost.ev.a.alice." + job + ".status.x",
		"outpost.ev.a.alice." + job + ".output",
		"outpost.ev.a.alice." + job + ".STATUS",
		"outpost.ev.a.alice." + job + ".*",
		"outpost.ev.a.alice." + job + ".>",
		"outpost.ev.a.alice.*.status",
		"outpost.ev.a.*." + job + ".status",
		"outpost.ev.*.alice." + job + ".status",
		"outpost.ev.A.alice." + job + ".status",
		"outpost.ev.a.Alice." + job + ".status",
		"outpost.ev.a.alice." + strings.ToUpper(job) + ".status",
		"outpost.ev.a.alice.notajob.status",
		"outpost.ev..alice." + job + ".status",
		"outpost.evx.a.alice." + job + ".status",
		"outpost.jobs.a.alice." + job + ".status",
		"outpost.ev.a.alice.evil." + job + ".status",
		"outpost.ev.a.alice." + job + ".status.",
	} {
		if e, err := subjects.ParseEvent(s); err == nil {
			t.Errorf("ParseEvent(%q) accepted: %+v", s, e)
		}
	}
}

func TestControlAndHeartbeatRoundTrip(t *testing.T) {
	for _, tag := range goodTokens {
		s := subjects.ControlSubject(tag, job)
		if !match(subjects.ControlFilter(tag), s) {
			t.Errorf("%s does not match %s", s, subjects.ControlFilter(tag))
		}
		gt, id, err := subjects.ParseControl(s)
		if err != nil || gt != tag || id != job {
			t.Errorf("ParseControl(%q) = %q, %q, %v", s, gt, id, err)
		}
		for _, name := range []string{"agent-1", "local-agent", strings.Repeat("n", 64)} {
			s := subjects.HeartbeatSubject(tag, name)
			if !match(subjects.HeartbeatAll, s) {
				t.Errorf("%s does not match %s", s, subjects.HeartbeatAll)
			}
			gt, gn, err := subjects.ParseHeartbeat(s)
			if err != nil || gt != tag || gn != name {
				t.Errorf("ParseHeartbeat(%q) = %q, %q, %v", s, gt, gn, err)
			}
		}
	}
	if match(subjects.ControlFilter("a"), subjects.ControlSubject("b", job)) {
		t.Error("tag a's control filter matches tag b's stop requests")
	}
}

func TestParseTagAndIDSubjectsRefuse(t *testing.T) {
	parsers := map[string]func(string) (string, string, error){
		"jobs": subjects.ParseJob, "ctl": subjects.ParseControl, "hb": subjects.ParseHeartbeat,
	}
	for kind, parse := range parsers {
		second := job
		if kind == "hb" {
			second = "agent-1"
		}
		for _, s := range []string{
			"",
			"outpost." + kind,
			"outpost." + kind + ".a",
			"outpost." + kind + ".a." + second + ".x",
			"outpost." + kind + ".a." + second + ".",
			"outpost." + kind + "..a." + second,
			"outpost." + kind + ".*." + second,
			"outpost." + kind + ".>",
			"outpost." + kind + ".a.*",
			"outpost." + kind + ".A." + second,
			"outpost." + kind + ".a.b." + second,
			"outpost." + kind + "x.a." + second,
			"outposts." + kind + ".a." + second,
			"Outpost." + kind + ".a." + second,
			"outpost." + kind + ".a." + strings.ToUpper(second),
		} {
			if a, b, err := parse(s); err == nil {
				t.Errorf("%s parser accepted %q: %q, %q", kind, s, a, b)
			} else if !errors.Is(err, subjects.ErrBadSubject) && !errors.Is(err, subjects.ErrBadToken) {
				t.Errorf("%s parser: %q: error %v is neither ErrBadSubject nor ErrBadToken", kind, s, err)
			}
		}
		// Each parser refuses the other kinds' subjects.
		for other := range parsers {
			if other == kind {
				continue
			}
			s := "outpost." + other + ".a." + job
			if _, _, err := parse(s); err == nil {
				t.Errorf("%s parser accepted %q", kind, s)
			}
		}
	}
	if _, _, err := subjects.ParseHeartbeat("outpost.hb.a.agent.evil"); err == nil {
		t.Error("ParseHeartbeat accepted a dotted agent name")
	}
}

func TestInbox(t *testing.T) {
	if got := subjects.Inbox("alice"); got != "_INBOX_alice" {
		t.Errorf("Inbox(alice) = %q", got)
	}
	for _, tc := range []struct {
		reply, name string
		in          bool
	}{
		{"_INBOX_alice.x", "alice", true},
		{"_INBOX_alice.x.y", "alice", true},
		{"_INBOX_coordinator.ctl", subjects.CoordinatorName, true},
		{"_INBOX_alice", "alice", false},
		{"_INBOX_alicex.y", "alice", false},
		{"_INBOX_bob.x", "alice", false},
		{"_INBOX.x", "alice", false},
		{"x._INBOX_alice.y", "alice", false},
		{"", "alice", false},
		{"_INBOX_coordinatorx.ctl", subjects.CoordinatorName, false},
		{"outpost.ev.a.alice." + job + ".status", "alice", false},
	} {
		if got := subjects.InInbox(tc.reply, tc.name); got != tc.in {
			t.Errorf("InInbox(%q, %q) = %v, want %v", tc.reply, tc.name, got, tc.in)
		}
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{subjects.ReaderConsumer("alice", 1), "r_alice_1"},
		{subjects.ReaderConsumer("bob", subjects.ReaderSlots), "r_bob_" + strconv.Itoa(subjects.ReaderSlots)},
		{subjects.MsgID(job, 2, "17"), job + ".2.17"},
		{subjects.MsgID(job, 1, string(subjects.StateRunning)), job + ".1.running"},
		{subjects.APISubject("alice", subjects.VerbSubmit), "outpost.api.alice.submit"},
		{subjects.JobSubject("a", job), "outpost.jobs.a." + job},
		{subjects.EventSubject("a", "alice", job, subjects.KindLog), "outpost.ev.a.alice." + job + ".log"},
		{subjects.ControlSubject("a", job), "outpost.ctl.a." + job},
		{subjects.HeartbeatSubject("a", "agent-1"), "outpost.hb.a.agent-1"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// match reports whether a NATS subject matches a filter with '*' and '>'.
func match(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, ft := range f {
		switch {
		case ft == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case ft != "*" && ft != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}
