package agent

import (
	"testing"

	"github.com/outpost-run/outpost/subjects"
)

func TestBeatDue(t *testing.T) {
	idle := subjects.HeartbeatMsg{Lines: 10, Bytes: 100}
	busy := idle
	busy.Running = []string{"j1"}
	printed := idle
	printed.Lines, printed.Bytes = 11, 104
	for _, c := range []struct {
		name     string
		hb, last subjects.HeartbeatMsg
		quiet    int
		want     bool
	}{
		{"idle, nothing new", idle, idle, 1, false},
		{"idle, nothing new, two ticks", idle, idle, idleBeats - 1, false},
		{"idle, nothing new, its idle beat", idle, idle, idleBeats, true},
		{"holds a job", busy, busy, 1, true},
		{"took a job", busy, idle, 1, true},
		{"let go of its last job", idle, busy, 1, true},
		{"log totals moved", printed, idle, 1, true},
	} {
		if got := beatDue(c.hb, c.last, c.quiet); got != c.want {
			t.Errorf("%s: due %v, want %v", c.name, got, c.want)
		}
	}
}
