package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadInput: every kind of bad input is refused with a message that
// says what is wrong, a non-zero exit for the CLI or an error code for the
// API, and nothing written: no job record, nothing queued, no event.
func TestBadInput(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t, coordOptions{})
	api := dialNATS(t, c.url, c.creds("admin"), "_INBOX_admin")
	// The coordinator's own credential may read every stream's state.
	root := dialNATS(t, c.url, c.creds("coordinator"), "_INBOX_coordinator")
	c.admin.mustOutpost(t, "run", "--tag", "local", "--", "true")

	// written sums up what a submit writes: a record, a queued job, events.
	// Stream sequence numbers only grow, even once a job is taken off the
	// work queue.
	written := func(t *testing.T) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var seqs []uint64
		for _, name := range []string{"OUTPOST_JOBS", "OUTPOST_EVENTS"} {
			s, err := root.js.Stream(ctx, name)
			if err != nil {
				t.Fatalf("stream %s: %v", name, err)
			}
			seqs = append(seqs, s.CachedInfo().State.LastSeq)
		}
		return fmt.Sprintf("%d job records, OUTPOST_JOBS at seq %d, OUTPOST_EVENTS at seq %d", len(c.admin.list(t)), seqs[0], seqs[1])
	}
	before := written(t)
	requireNothingWritten := func(t *testing.T) {
		t.Helper()
		if after := written(t); after != before {
			t.Errorf("the refused input left something behind: before %s; after %s", before, after)
		}
	}

	big := strings.Repeat("x", 600<<10)
	for _, tc := range []struct {
		name, verb, payload string
		code, msg           string
	}{
		{"malformed JSON", "submit", `{"tag":"local","command":["true"]`, "bad_request", "malformed JSON"},
		{"not JSON", "submit", `echo hi`, "bad_request", "malformed JSON"},
		{"trailing data", "submit", `{"tag":"local","command":["true"]}{}`, "bad_request", "trailing data"},
		{"unknown field", "submit", `{"tag":"local","comand":["true"]}`, "bad_request", `unknown field "comand"`},
		{"unknown tag", "submit", `{"tag":"nosuch","command":["true"]}`, "unknown_tag", `tag "nosuch"`},
		{"empty command", "submit", `{"tag":"local","command":[]}`, "bad_request", "command is empty"},
		{"no command", "submit", `{"tag":"local"}`, "bad_request", "command is empty"},
		{"bad tag token", "submit", `{"tag":"a.b","command":["true"]}`, "bad_request", `tag "a.b"`},
		{"bad timeout", "submit", `{"tag":"local","command":["true"],"timeout":"soon"}`, "bad_request", `duration "soon"`},
		{"bad env name", "submit", `{"tag":"local","command":["true"],"env":{"A=B":"c"}}`, "bad_request", `env name "A=B"`},
		{"oversized", "submit", `{"tag":"local","command":["cat"],"stdin":"` + big + `"}`, "too_large", "at most 524288"},
		{"bad job ID", "get", `{"id":"x"}`, "bad_request", `job ID "x"`},
		{"unknown job", "stop", `{"id":"01m8463yqqbcm4s36x71kyz7zz"}`, "not_found", "no job 01m8463yqqbcm4s36x71kyz7zz"},
		{"bad list state", "list", `{"state":"done"}`, "bad_request", `unknown state "done"`},
	} {
		t.Run("api/"+tc.name, func(t *testing.T) {
			reply := api.request(t, "outpost.api.admin."+tc.verb, []byte(tc.payload))
			if reply.Error == nil || reply.Error.Code != tc.code || !strings.Contains(reply.Error.Message, tc.msg) {
				t.Errorf("reply %+v (error %+v); want code %s and a message containing %q", reply, reply.Error, tc.code, tc.msg)
			}
			if reply.Job != nil || reply.Jobs != nil {
				t.Errorf("an error reply carries a result: %+v", reply)
			}
			requireNothingWritten(t)
		})
	}

	bigFile := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(bigFile, []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	elsewhere := session{dir: t.TempDir(), server: c.url} // no creds, and no ./.outpost
	for _, tc := range []struct {
		name string
		as   session
		args []string
		msg  string
	}{
		{"unknown tag", c.admin, []string{"run", "--tag", "nosuch", "--", "true"}, `tag "nosuch"`},
		{"empty command", c.admin, []string{"run", "--tag", "local"}, "no command to run"},
		{"empty command after --", c.admin, []string{"run", "--tag", "local", "--"}, "no command to run"},
		{"no tag", c.admin, []string{"run", "--", "true"}, `tag ""`},
		{"bad tag token", c.admin, []string{"run", "--tag", "a.b", "--", "true"}, `tag "a.b"`},
		{"bad env", c.admin, []string{"run", "--tag", "local", "--env", "NOVALUE", "--", "true"}, "want NAME=VALUE"},
		{"bad timeout", c.admin, []string{"run", "--tag", "local", "--timeout", "soon", "--", "true"}, `invalid duration "soon"`},
		{"oversized stdin", c.admin, []string{"run", "--tag", "local", "--stdin", bigFile, "--", "cat"}, "at most 524288"},
		{"missing stdin file", c.admin, []string{"run", "--tag", "local", "--stdin", "/nope", "--", "cat"}, "/nope"},
		{"status of a bad job ID", c.admin, []string{"status", "NOT-AN-ID"}, `job ID "NOT-AN-ID"`},
		{"logs of a bad job ID", c.admin, []string{"logs", "x"}, `job ID "x"`},
		{"stop of a bad job ID", c.admin, []string{"stop", "x"}, `job ID "x"`},
		{"status of an unknown job", c.admin, []string{"status", "01m8463yqqbcm4s36x71kyz7zz"}, "no job 01m8463yqqbcm4s36x71kyz7zz"},
		{"logs of an unknown job", c.admin, []string{"logs", "01m8463yqqbcm4s36x71kyz7zz"}, "01m8463yqqbcm4s36x71kyz7zz"},
		{"ls with a bad state", c.admin, []string{"ls", "--state", "done"}, `unknown state "done"`},
		{"missing creds file", c.admin, []string{"--creds", "/nope", "ls"}, "creds file /nope does not exist"},
		{"no creds at all", elsewhere, []string{"ls"}, "no creds file"},
		{"not a creds file", c.admin, []string{"--creds", bigFile, "ls"}, "not a NATS creds file"},
		{"unreachable server", c.admin, []string{"--server", "nats://127.0.0.1:1", "ls"}, "cannot reach NATS at nats://127.0.0.1:1"},
		{"unknown command", c.admin, []string{"frobnicate"}, `unknown command "frobnicate"`},
	} {
		t.Run("cli/"+tc.name, func(t *testing.T) {
			r := tc.as.outpost(t, tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.msg) {
				t.Errorf("outpost %s: want a non-zero exit and %q on stderr; got\n%s", strings.Join(tc.args, " "), tc.msg, r)
			}
			requireNothingWritten(t)
		})
	}

	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"agent without creds", []string{"agent", "--server", c.url}, "--creds is required"},
		{"agent with missing creds", []string{"agent", "--server", c.url, "--creds", "/nope"}, "creds file /nope does not exist"},
		{"agent with a negative --gomaxprocs", []string{"agent", "--server", c.url, "--creds", c.creds("admin"), "--gomaxprocs", "-1"}, "--gomaxprocs -1: want 1 or more"},
		{"agent with admin creds", []string{"agent", "--server", c.url, "--creds", c.creds("admin")}, `is for role "admin", not agent`},
		{"coordinator with a bad listen address", []string{"coordinator", "run", "--data", t.TempDir(), "--listen", "nonsense"}, `listen address "nonsense"`},
		{"coordinator with a busy port", []string{"coordinator", "run", "--data", t.TempDir(), "--listen", strings.TrimPrefix(c.url, "nats://")}, "cannot listen on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, t.TempDir(), baseEnv(), bin(tc.args[0]), tc.args[1:]...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.msg) {
				t.Errorf("%s: want a non-zero exit and %q on stderr; got\n%s", strings.Join(tc.args, " "), tc.msg, r)
			}
		})
	}
	requireNothingWritten(t)
}

// TestHelp: --help works on every command of the three binaries.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"outpost"}, {"outpost", "run"}, {"outpost", "logs"}, {"outpost", "status"},
		{"outpost", "ls"}, {"outpost", "stop"}, {"outpost", "whoami"},
		{"coordinator"}, {"coordinator", "init"}, {"coordinator", "run"},
		{"agent"},
	} {
		r := runCmd(t, t.TempDir(), baseEnv(), bin(args[0]), append(args[1:], "--help")...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") || !strings.Contains(r.stdout, strings.Join(args, " ")) {
			t.Errorf("%s --help:\n%s", strings.Join(args, " "), r)
		}
	}
}
