package subjects_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outpost-run/outpost/subjects"
)

// FuzzParseSpec feeds arbitrary submit payloads to ParseSpec. It must never
// panic; what it accepts must be a runnable spec within every limit, and
// must survive the trip to JSON and back unchanged.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{
		`{"tag":"a","command":["echo","hi"]}`,
		`{"tag":"gpu","command":["sh","-c","x"],"env":{"A":"1"},"dir":"d","timeout":"1h","max_attempts":5,"stdin":"x"}`,
		`{"tag":"a","command":["x"],"timeout":1.5}`,
		`{"tag":"a","command":["x"]}}`,
		`{"tag":"a","comand":["x"]}`,
		`{"tag":"a.b","command":["x"]}`,
		`{"tag":"a","command":["a\u0000"]}`,
		`{"tag":"a","command":["x"],"env":{"1A":"x"}}`,
		`{"tag":"a","command":["x"],"max_attempts":101}`,
		`{"tag":"a","command":["x"],"limits":{"memory":"512Mi","cpu":0.5,"pids":10}}`,
		`{"tag":"a","command":["x"],"limits":{"memory":4194304,"cpu":"250m"}}`,
		`{"tag":"a","command":["x"],"limits":{}}`,
		`{"tag":"a","command":["x"],"limits":{"memory":"99999999999999Ti"}}`,
		`{"tag":"a","command":["x"],"limits":{"cpu":1e-9,"pids":-3}}`,
		`{"tag":"a","command":["x"],"limits":{"memory":"1.5Gi"}}`,
		`{"tag":"a","command":["x"],"secrets":{"sender":"XCTTSV23PIJ2UBEAHZ2JWVLV55LWMOX6YUEKPCKS6KOQGRZ2DO4COLCE","bundle":"eGt2MXcD","keys":{"agent-a":"eGt2MVi+"}}}`,
		`{"tag":"a","command":["x"],"secrets":{"sender":"UCTTSV23PIJ2UBEAHZ2JWVLV55LWMOX6YUEKPCKS6KOQGRZ2DO4COLCE","bundle":"eGt2MXcD","keys":{"agent-a":"eGt2MVi+"}}}`,
		`{"tag":"a","command":["x"],"secrets":{"sender":"XCTTSV23PIJ2UBEAHZ2JWVLV55LWMOX6YUEKPCKS6KOQGRZ2DO4COLCE","bundle":"","keys":{}}}`,
		`{"tag":"a","command":["x"],"secrets":{"sender":"XCTTSV23PIJ2UBEAHZ2JWVLV55LWMOX6YUEKPCKS6KOQGRZ2DO4COLCE","bundle":"eGt2MXcD","keys":{"Agent.A":"eGt2MVi+"}}}`,
		`{"tag":"a","command":["x"],"secrets":{"sender":"XCTTSV23PIJ2UBEAHZ2JWVLV55LWMOX6YUEKPCKS6KOQGRZ2DO4COLCE","bundle":"!!","keys":{"a":"eGt2"}}}`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := subjects.ParseSpec(data)
		if err != nil {
			if !errors.Is(err, subjects.ErrBadSpec) {
				t.Fatalf("error %v is not ErrBadSpec", err)
			}
			return
		}
		if err := subjects.ValidTag(s.Tag); err != nil {
			t.Fatalf("accepted a bad tag: %v", err)
		}
		if len(s.Command) == 0 || s.Command[0] == "" || len(s.Command) > subjects.MaxArgs {
			t.Fatalf("accepted command %q", s.Command)
		}
		for _, a := range append(append([]string{s.Dir}, s.Command...), values(s.Env)...) {
			if strings.IndexByte(a, 0) >= 0 {
				t.Fatalf("accepted a NUL byte in %q", a)
			}
		}
		if s.MaxAttempts < 1 || s.MaxAttempts > subjects.MaxAttemptsLimit {
			t.Fatalf("accepted max_attempts %d", s.MaxAttempts)
		}
		if s.Timeout < 0 || time.Duration(s.Timeout) > subjects.MaxTimeout {
			t.Fatalf("accepted timeout %s", time.Duration(s.Timeout))
		}
		if s.Secrets != nil && s.Secrets.Validate() != nil {
			t.Fatalf("accepted secrets %+v", *s.Secrets)
		}
		if l := s.Limits; l != nil {
			if l.Zero() || l.Validate() != nil {
				t.Fatalf("accepted limits %+v", *l)
			}
			if l.Memory != 0 && (l.Memory < subjects.MinMemory || l.Memory > subjects.MaxMemory) ||
				l.CPU != 0 && (l.CPU < subjects.MinCPU || l.CPU > subjects.MaxCPU) || l.Pids < 0 || l.Pids > subjects.MaxPids {
				t.Fatalf("accepted limits out of bounds: %+v", *l)
			}
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshal %+v: %v", s, err)
		}
		if len(b) > subjects.MaxSubmitBytes {
			// Escaping can make a spec grow; the trip back would refuse it
			// on size, which is not a property of the parser.
			return
		}
		back, err := subjects.ParseSpec(b)
		if err != nil {
			t.Fatalf("an accepted spec does not parse again: %v\n%s", err, b)
		}
		if len(s.Env) == 0 {
			s.Env = nil
		}
		if len(back.Env) == 0 {
			back.Env = nil
		}
		if !reflect.DeepEqual(s, back) {
			t.Fatalf("round trip changed the spec:\n%+v\n%+v", s, back)
		}
	})
}

func values(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// FuzzParseSubjects feeds arbitrary subjects to every parser. None may
// panic, and any subject one accepts must be rebuilt, token for token, by
// its builder from what the parser returned.
func FuzzParseSubjects(f *testing.F) {
	for _, s := range []string{
		subjects.APISubject("alice", subjects.VerbSubmit),
		subjects.JobSubject("a", job),
		subjects.EventSubject("a", "alice", job, subjects.KindStatus),
		subjects.EventSubject("gpu", "bob", job, subjects.KindLog),
		subjects.LiveSubject("a", "alice", job, subjects.KindLog),
		"outpost.live.a.alice." + job + ".exit",
		subjects.ControlSubject("a", job),
		subjects.HeartbeatSubject("a", "agent-1"),
		"outpost.api.alice.evil.submit",
		"outpost.ev.*.alice.>",
		"outpost.jobs.a." + strings.ToUpper(job),
		"outpost..",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if name, verb, err := subjects.ParseAPI(s); err == nil {
			if got := subjects.APISubject(name, verb); got != s {
				t.Fatalf("ParseAPI(%q) = %q, %q, which builds %q", s, name, verb, got)
			}
			if subjects.ValidName(name) != nil {
				t.Fatalf("ParseAPI(%q) accepted name %q", s, name)
			}
		}
		if tag, id, err := subjects.ParseJob(s); err == nil {
			if got := subjects.JobSubject(tag, id); got != s {
				t.Fatalf("ParseJob(%q) = %q, %q, which builds %q", s, tag, id, got)
			}
			if subjects.ValidTag(tag) != nil || subjects.ValidJobID(id) != nil {
				t.Fatalf("ParseJob(%q) accepted bad tokens", s)
			}
		}
		for _, p := range []struct {
			name  string
			parse func(string) (subjects.Event, error)
			build func(tag, owner, id string, kind subjects.EventKind) string
		}{{"ParseEvent", subjects.ParseEvent, subjects.EventSubject}, {"ParseLive", subjects.ParseLive, subjects.LiveSubject}} {
			e, err := p.parse(s)
			if err != nil {
				continue
			}
			if got := p.build(e.Tag, e.Owner, e.Job, e.Kind); got != s {
				t.Fatalf("%s(%q) = %+v, which builds %q", p.name, s, e, got)
			}
			if subjects.ValidTag(e.Tag) != nil || subjects.ValidName(e.Owner) != nil || subjects.ValidJobID(e.Job) != nil {
				t.Fatalf("%s(%q) accepted bad tokens", p.name, s)
			}
			if e.Kind != subjects.KindStatus && e.Kind != subjects.KindLog {
				t.Fatalf("%s(%q) accepted kind %q", p.name, s, e.Kind)
			}
		}
		if tag, id, err := subjects.ParseControl(s); err == nil {
			if got := subjects.ControlSubject(tag, id); got != s {
				t.Fatalf("ParseControl(%q) = %q, %q, which builds %q", s, tag, id, got)
			}
			if subjects.ValidTag(tag) != nil || subjects.ValidJobID(id) != nil {
				t.Fatalf("ParseControl(%q) accepted bad tokens", s)
			}
		}
		if tag, agent, err := subjects.ParseHeartbeat(s); err == nil {
			if got := subjects.HeartbeatSubject(tag, agent); got != s {
				t.Fatalf("ParseHeartbeat(%q) = %q, %q, which builds %q", s, tag, agent, got)
			}
			if subjects.ValidTag(tag) != nil || subjects.ValidName(agent) != nil {
				t.Fatalf("ParseHeartbeat(%q) accepted bad tokens", s)
			}
		}
	})
}

// FuzzParseRequest feeds arbitrary API payloads to ParseRequest for every
// request type. It must never panic, and what it accepts must encode again.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"id":"01jd7x3k9q8r6t5v4w3y2z1a0b"}`,
		`{"tag":"a","state":"running","owner":"alice","limit":10}`,
		`{"id":"01jd7x3k9q8r6t5v4w3y2z1a0b","force":true,"grace":"5s"}`,
		`{"name":"gpu-1","role":"agent","tags":["gpu"],"expires":"720h"}`,
		`{"name":"x"}`,
		`{"role":"agent"}`,
		`{"grace":-1}`,
		`{"limit":1e309}`,
		`{"id":1}`,
		`[]`,
		`{} {}`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []any{
			&subjects.GetRequest{}, &subjects.ListRequest{}, &subjects.StopRequest{},
			&subjects.IssueRequest{}, &subjects.RevokeRequest{}, &subjects.CredsRequest{}, &subjects.AgentsRequest{},
		} {
			if err := subjects.ParseRequest(data, v); err != nil {
				continue
			}
			if _, err := json.Marshal(v); err != nil {
				t.Fatalf("accepted %q into %T, which does not encode: %v", data, v, err)
			}
		}
	})
}
