package subjects_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-run/outpost/subjects"
)

func TestParseSpecDefaults(t *testing.T) {
	s, err := subjects.ParseSpec([]byte(`{"tag":"a","command":["echo","hi"]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := subjects.JobSpec{Tag: "a", Command: []string{"echo", "hi"}, MaxAttempts: subjects.DefaultMaxAttempts}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %+v, want %+v", s, want)
	}
	full := `{"tag":"gpu","command":["sh","-c","x"],"env":{"A":"1","_b2":""},"dir":"sub/dir",` +
		`"timeout":"1h30m","max_attempts":5,"stdin":"in\n"}`
	s, err = subjects.ParseSpec([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	want = subjects.JobSpec{Tag: "gpu", Command: []string{"sh", "-c", "x"}, Env: map[string]string{"A": "1", "_b2": ""},
		Dir: "sub/dir", Timeout: subjects.Duration(90 * time.Minute), MaxAttempts: 5, Stdin: "in\n"}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %+v, want %+v", s, want)
	}
}

func TestParseSpec(t *testing.T) {
	base := func(extra string) string { return `{"tag":"a","command":["x"]` + extra + `}` }
	big := func(n int) string {
		// A payload of exactly n bytes.
		head, tail := `{"tag":"a","command":["x"],"stdin":"`, `"}`
		return head + strings.Repeat("i", n-len(head)-len(tail)) + tail
	}
	args := func(n int) string {
		return `{"tag":"a","command":["x"` + strings.Repeat(`,"y"`, n-1) + `]}`
	}
	for _, tc := range []struct {
		name, in string
		ok       bool
		errHas   string // part of the error message
	}{
		{"minimal", base(""), true, ""},
		{"unknown field", `{"tag":"a","comand":["x"]}`, false, `"comand"`},
		{"unknown field beside command", base(`,"user":"root"`), false, `"user"`},
		{"trailing object", base("") + `{}`, false, "trailing data"},
		{"trailing garbage", base("") + `x`, false, "trailing data"},
		{"trailing brace", base("") + `}`, false, "trailing data"},
		{"trailing bracket", base("") + `]`, false, "trailing data"},
		{"trailing whitespace", base("") + " \n\t", true, ""},
		{"not an object", `["a"]`, false, "malformed JSON"},
		{"empty", ``, false, "malformed JSON"},
		{"truncated", `{"tag":"a","command":["x"`, false, "malformed JSON"},
		{"null", `null`, false, "tag"},
		{"at size limit", big(subjects.MaxSubmitBytes), true, ""},
		{"oversized", big(subjects.MaxSubmitBytes + 1), false, "at most"},
		{"no tag", `{"command":["x"]}`, false, "tag"},
		{"bad tag", `{"tag":"a.b","command":["x"]}`, false, `"a.b"`},
		{"wildcard tag", `{"tag":"*","command":["x"]}`, false, `"*"`},
		{"no command", `{"tag":"a"}`, false, "command is empty"},
		{"empty command", `{"tag":"a","command":[]}`, false, "command is empty"},
		{"empty program", `{"tag":"a","command":["","x"]}`, false, "command is empty"},
		{"max args", args(subjects.MaxArgs), true, ""},
		{"too many args", args(subjects.MaxArgs + 1), false, "arguments"},
		{"NUL in program", `{"tag":"a","command":["a\u0000b"]}`, false, "command[0] contains a NUL"},
		{"NUL in argument", `{"tag":"a","command":["x","a\u0000"]}`, false, "command[1] contains a NUL"},
		{"NUL in env value", base(`,"env":{"A":"\u0000"}`), false, "NUL"},
		{"NUL in dir", base(`,"dir":"a\u0000"`), false, "dir contains a NUL"},
		{"env name with digit first", base(`,"env":{"1A":"x"}`), false, `"1A"`},
		{"env name with dash", base(`,"env":{"A-B":"x"}`), false, `"A-B"`},
		{"env name with equals", base(`,"env":{"A=B":"x"}`), false, `"A=B"`},
		{"env name with space", base(`,"env":{"A B":"x"}`), false, `"A B"`},
		{"empty env name", base(`,"env":{"":"x"}`), false, `""`},
		{"env name unicode", base(`,"env":{"É":"x"}`), false, "env name"},
		{"timeout string", base(`,"timeout":"90s"`), true, ""},
		{"timeout seconds", base(`,"timeout":90`), true, ""},
		{"timeout fraction", base(`,"timeout":1.5`), true, ""},
		{"timeout zero", base(`,"timeout":0`), true, ""},
		{"timeout at limit", base(`,"timeout":"168h"`), true, ""},
		{"timeout over limit", base(`,"timeout":"168h1s"`), false, "timeout"},
		{"timeout negative", base(`,"timeout":"-1s"`), false, "timeout"},
		{"timeout negative number", base(`,"timeout":-1`), false, "timeout"},
		{"timeout garbage", base(`,"timeout":"soon"`), false, "soon"},
		{"timeout empty string", base(`,"timeout":""`), false, "duration"},
		{"timeout bool", base(`,"timeout":true`), false, "duration"},
		{"timeout object", base(`,"timeout":{}`), false, "duration"},
		{"max_attempts 1", base(`,"max_attempts":1`), true, ""},
		{"max_attempts at limit", base(`,"max_attempts":` + strconv.Itoa(subjects.MaxAttemptsLimit)), true, ""},
		{"max_attempts over limit", base(`,"max_attempts":` + strconv.Itoa(subjects.MaxAttemptsLimit+1)), false, "max_attempts"},
		{"max_attempts negative", base(`,"max_attempts":-1`), false, "max_attempts"},
		{"max_attempts fraction", base(`,"max_attempts":1.5`), false, "malformed JSON"},
		{"command not a list", `{"tag":"a","command":"echo hi"}`, false, "malformed JSON"},
		{"limits", base(`,"limits":{"memory":"512Mi","cpu":0.5,"pids":100}`), true, ""},
		{"limits empty", base(`,"limits":{}`), true, ""},
		{"limits memory bytes", base(`,"limits":{"memory":67108864}`), true, ""},
		{"limits memory too small", base(`,"limits":{"memory":"1Mi"}`), false, "limits.memory"},
		{"limits memory too large", base(`,"limits":{"memory":"2000Ti"}`), false, "limits.memory"},
		{"limits memory overflow", base(`,"limits":{"memory":"9999999999999999Ti"}`), false, "too large"},
		{"limits memory negative", base(`,"limits":{"memory":-1}`), false, "memory"},
		{"limits memory fraction", base(`,"limits":{"memory":1.5e9}`), false, "memory"},
		{"limits memory unit case", base(`,"limits":{"memory":"512mi"}`), false, "512mi"},
		{"limits memory space", base(`,"limits":{"memory":"512 Mi"}`), false, "memory"},
		{"limits memory bool", base(`,"limits":{"memory":true}`), false, "memory"},
		{"limits cpu millicores", base(`,"limits":{"cpu":"250m"}`), true, ""},
		{"limits cpu too small", base(`,"limits":{"cpu":0.001}`), false, "limits.cpu"},
		{"limits cpu too large", base(`,"limits":{"cpu":2000}`), false, "limits.cpu"},
		{"limits cpu negative", base(`,"limits":{"cpu":-1}`), false, "cpu"},
		{"limits cpu exponent", base(`,"limits":{"cpu":1e2}`), false, "cpu"},
		{"limits pids negative", base(`,"limits":{"pids":-1}`), false, "limits.pids"},
		{"limits pids too many", base(`,"limits":{"pids":4194305}`), false, "limits.pids"},
		{"limits unknown", base(`,"limits":{"disk":"1G"}`), false, `"disk"`},
		{"limits not an object", base(`,"limits":"512Mi"`), false, "malformed JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := subjects.ParseSpec([]byte(tc.in))
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if s.MaxAttempts < 1 || s.MaxAttempts > subjects.MaxAttemptsLimit {
					t.Errorf("max_attempts %d after defaults", s.MaxAttempts)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %+v", s)
			}
			if !errors.Is(err, subjects.ErrBadSpec) {
				t.Errorf("error %v is not ErrBadSpec", err)
			}
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q does not mention %q", err, tc.errHas)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	s, err := subjects.ParseSpec([]byte(`{"tag":"a","command":["x"],"limits":{"memory":"1536Mi","cpu":"500m","pids":64}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := subjects.Limits{Memory: 1536 << 20, CPU: 0.5, Pids: 64}
	if s.Limits == nil || *s.Limits != want {
		t.Fatalf("limits %+v, want %+v", s.Limits, want)
	}
	if got := s.Limits.String(); got != "memory=1536Mi cpu=0.5 pids=64" {
		t.Errorf("String() = %q", got)
	}
	b, _ := json.Marshal(s.Limits)
	if string(b) != `{"memory":1610612736,"cpu":0.5,"pids":64}` {
		t.Errorf("encoded as %s", b)
	}
	if s, err = subjects.ParseSpec([]byte(`{"tag":"a","command":["x"],"limits":{}}`)); err != nil || s.Limits != nil {
		t.Errorf("empty limits: %+v, %v; want none", s.Limits, err)
	}
	for in, want := range map[string]subjects.Bytes{
		"4194304": 4 << 20, "512Mi": 512 << 20, "2G": 2e9, "1Ti": 1 << 40, "3k": 3000, "7Ki": 7 << 10,
	} {
		if got, err := subjects.ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]subjects.Cores{"0.5": 0.5, "2": 2, "250m": 0.25, "1.125": 1.125} {
		if got, err := subjects.ParseCores(in); err != nil || got != want {
			t.Errorf("ParseCores(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestParseSpecDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{
		`"90s"`: 90 * time.Second, `"1h30m"`: 90 * time.Minute, `"250ms"`: 250 * time.Millisecond,
		`90`: 90 * time.Second, `1.5`: 1500 * time.Millisecond, `0`: 0, `"0s"`: 0,
	} {
		s, err := subjects.ParseSpec([]byte(`{"tag":"a","command":["x"],"timeout":` + in + `}`))
		if err != nil || time.Duration(s.Timeout) != want {
			t.Errorf("timeout %s: got %s, %v; want %s", in, time.Duration(s.Timeout), err, want)
		}
	}
	// A duration goes out as a string and comes back the same.
	for _, d := range []time.Duration{0, time.Nanosecond, 1500 * time.Millisecond, 90 * time.Minute, subjects.MaxTimeout} {
		b, err := json.Marshal(subjects.Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != '"' {
			t.Errorf("%s marshals to %s, not a string", d, b)
		}
		var back subjects.Duration
		if err := json.Unmarshal(b, &back); err != nil || time.Duration(back) != d {
			t.Errorf("%s: round trip through %s gave %s, %v", d, b, time.Duration(back), err)
		}
	}
}

func TestParseRequest(t *testing.T) {
	var g subjects.GetRequest
	for _, in := range []string{"", "  ", "{}"} {
		g = subjects.GetRequest{}
		if err := subjects.ParseRequest([]byte(in), &g); err != nil || g.ID != "" {
			t.Errorf("ParseRequest(%q) = %+v, %v", in, g, err)
		}
	}
	if err := subjects.ParseRequest([]byte(`{"id":"x"}`), &g); err != nil || g.ID != "x" {
		t.Errorf("got %+v, %v", g, err)
	}
	for _, in := range []string{`{"ID":"x","force":true}`, `{"id":"x"}}`, `{"id":"x"} {}`, `[`, `"x"`} {
		if err := subjects.ParseRequest([]byte(in), &g); err == nil {
			t.Errorf("ParseRequest(%q) accepted", in)
		}
	}
	var st subjects.StopRequest
	if err := subjects.ParseRequest([]byte(`{"id":"x","force":true,"grace":"2s"}`), &st); err != nil ||
		!st.Force || time.Duration(st.Grace) != 2*time.Second {
		t.Errorf("got %+v, %v", st, err)
	}
}

func TestStates(t *testing.T) {
	terminal := map[subjects.State]bool{
		subjects.StateSucceeded: true, subjects.StateFailed: true, subjects.StateStopped: true, subjects.StateTimedOut: true,
	}
	for _, s := range subjects.States {
		if s.Terminal() != terminal[s] {
			t.Errorf("%s.Terminal() = %v", s, s.Terminal())
		}
		if got, err := subjects.ParseState(string(s)); err != nil || got != s {
			t.Errorf("ParseState(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "done", "Running", "queued "} {
		if _, err := subjects.ParseState(s); err == nil {
			t.Errorf("ParseState(%q) accepted", s)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	err := error(subjects.Errorf(subjects.CodeNotFound, "no job %s", job))
	if !errors.Is(err, &subjects.Error{Code: subjects.CodeNotFound}) {
		t.Error("errors.Is does not match an API error by its code")
	}
	if errors.Is(err, &subjects.Error{Code: subjects.CodeForbidden}) {
		t.Error("errors.Is matches an API error of another code")
	}
	if !strings.Contains(err.Error(), "not_found") || !strings.Contains(err.Error(), job) {
		t.Errorf("error text %q", err)
	}
	r := subjects.Reply{Error: subjects.Errorf(subjects.CodeConflict, "x")}
	if !errors.Is(r.Err(), &subjects.Error{Code: subjects.CodeConflict}) {
		t.Errorf("Reply.Err() = %v", r.Err())
	}
	if (&subjects.Reply{}).Err() != nil {
		t.Error("an empty reply has an error")
	}
	b, _ := json.Marshal(r)
	if string(b) != `{"error":{"code":"conflict","message":"x"}}` {
		t.Errorf("an error reply travels as %s", b)
	}
}

func TestRecordApply(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	code := func(c int) *int { return &c }
	rec := func(state subjects.State, attempt int) subjects.Record {
		r := subjects.Record{Job: subjects.Job{ID: job, Attempt: attempt, Owner: "alice",
			JobSpec: subjects.JobSpec{Tag: "a", Command: []string{"x"}, MaxAttempts: 3}}, State: state}
		if state != subjects.StateQueued {
			s := at(1)
			r.StartedAt, r.Agent = &s, "agent-1"
		}
		if state.Terminal() {
			f := at(2)
			r.FinishedAt, r.ExitCode = &f, code(0)
		}
		return r
	}
	ev := func(state subjects.State, attempt int) subjects.StatusEvent {
		return subjects.StatusEvent{Job: job, State: state, Attempt: attempt, Agent: "agent-2", At: at(10)}
	}
	type check func(t *testing.T, r subjects.Record)
	for _, tc := range []struct {
		name    string
		rec     subjects.Record
		ev      subjects.StatusEvent
		applied bool
		check   check
	}{
		{"queued to running", rec(subjects.StateQueued, 1), ev(subjects.StateRunning, 1), true, func(t *testing.T, r subjects.Record) {
			if r.StartedAt == nil || !r.StartedAt.Equal(at(10)) || r.FinishedAt != nil || r.Agent != "agent-2" {
				t.Errorf("started %v finished %v agent %q", r.StartedAt, r.FinishedAt, r.Agent)
			}
		}},
		{"running to succeeded", rec(subjects.StateRunning, 1), func() subjects.StatusEvent {
			e := ev(subjects.StateSucceeded, 1)
			e.ExitCode = code(0)
			return e
		}(), true, func(t *testing.T, r subjects.Record) {
			if r.FinishedAt == nil || !r.FinishedAt.Equal(at(10)) || r.ExitCode == nil || *r.ExitCode != 0 {
				t.Errorf("finished %v exit %v", r.FinishedAt, r.ExitCode)
			}
			if r.StartedAt == nil || !r.StartedAt.Equal(at(1)) {
				t.Errorf("a terminal event moved the start time to %v", r.StartedAt)
			}
		}},
		{"running to failed keeps the reason", rec(subjects.StateRunning, 1), func() subjects.StatusEvent {
			e := ev(subjects.StateFailed, 1)
			e.ExitCode, e.Error = code(3), "exit status 3"
			return e
		}(), true, func(t *testing.T, r subjects.Record) {
			if *r.ExitCode != 3 || r.Error != "exit status 3" {
				t.Errorf("exit %d error %q", *r.ExitCode, r.Error)
			}
		}},
		{"queued straight to stopped", rec(subjects.StateQueued, 1), ev(subjects.StateStopped, 1), true, nil},
		{"queued to queued", rec(subjects.StateQueued, 1), ev(subjects.StateQueued, 1), false, nil},
		{"running to running", rec(subjects.StateRunning, 1), ev(subjects.StateRunning, 1), false, nil},
		{"running back to queued", rec(subjects.StateRunning, 1), ev(subjects.StateQueued, 1), false, nil},
		{"stale attempt", rec(subjects.StateRunning, 2), ev(subjects.StateFailed, 1), false, nil},
		{"stale attempt running", rec(subjects.StateQueued, 2), ev(subjects.StateRunning, 1), false, nil},
		{"succeeded never changes", rec(subjects.StateSucceeded, 1), ev(subjects.StateFailed, 1), false, nil},
		{"succeeded ignores a later attempt", rec(subjects.StateSucceeded, 1), ev(subjects.StateRunning, 2), false, nil},
		{"failed ignores a later attempt", rec(subjects.StateFailed, 1), ev(subjects.StateSucceeded, 5), false, nil},
		{"stopped never changes", rec(subjects.StateStopped, 1), ev(subjects.StateRunning, 1), false, nil},
		{"timed out never changes", rec(subjects.StateTimedOut, 2), ev(subjects.StateSucceeded, 3), false, nil},
		{"another job's event", rec(subjects.StateQueued, 1), func() subjects.StatusEvent {
			e := ev(subjects.StateRunning, 1)
			e.Job = strings.Repeat("1", 26)
			return e
		}(), false, nil},
		{"new attempt resets", func() subjects.Record {
			r := rec(subjects.StateRunning, 1)
			r.ExitCode, r.Error = code(9), "old"
			return r
		}(), ev(subjects.StateRunning, 2), true, func(t *testing.T, r subjects.Record) {
			if r.Attempt != 2 || r.Agent != "agent-2" || r.ExitCode != nil || r.Error != "" {
				t.Errorf("attempt %d agent %q exit %v error %q", r.Attempt, r.Agent, r.ExitCode, r.Error)
			}
			if r.StartedAt == nil || !r.StartedAt.Equal(at(10)) || r.FinishedAt != nil {
				t.Errorf("started %v finished %v", r.StartedAt, r.FinishedAt)
			}
		}},
		{"new attempt may end at once", rec(subjects.StateRunning, 1), ev(subjects.StateFailed, 2), true, func(t *testing.T, r subjects.Record) {
			if r.Attempt != 2 || r.State != subjects.StateFailed || r.FinishedAt == nil {
				t.Errorf("attempt %d state %s finished %v", r.Attempt, r.State, r.FinishedAt)
			}
		}},
		{"requeued as the next attempt", rec(subjects.StateRunning, 1), ev(subjects.StateQueued, 2), true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rec
			before := clone(t, r)
			if got := r.Apply(tc.ev); got != tc.applied {
				t.Fatalf("Apply = %v, want %v", got, tc.applied)
			}
			if !tc.applied {
				if !reflect.DeepEqual(r, before) {
					t.Errorf("a refused event changed the record:\n got %+v\nwant %+v", r, before)
				}
				return
			}
			if r.State != tc.ev.State || r.Attempt != tc.ev.Attempt {
				t.Errorf("record is %s attempt %d, want %s attempt %d", r.State, r.Attempt, tc.ev.State, tc.ev.Attempt)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
			// Folding the same event again changes nothing.
			again := clone(t, r)
			if r.Apply(tc.ev) || !reflect.DeepEqual(r, again) {
				t.Error("the same event applied twice")
			}
		})
	}
}

// clone deep-copies a record through JSON, the way it is stored.
func clone(t *testing.T, r subjects.Record) subjects.Record {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var out subjects.Record
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	// Times lose their monotonic reading; compare as stored.
	rb, _ := json.Marshal(out)
	if string(rb) != string(b) {
		t.Fatalf("record does not survive JSON: %s vs %s", b, rb)
	}
	return out
}
