package coordinator

import (
	"testing"
	"time"

	"github.com/outpost-run/outpost/subjects"
)

// An agent counts as online for three 5 s beats, or two of the longest
// gaps its heartbeat says it leaves, whichever is longer; a gap is taken
// for at most longestBeat.
func TestOnline(t *testing.T) {
	for _, c := range []struct {
		every, ago time.Duration
		want       bool
	}{
		{0, 14 * time.Second, true},
		{0, 16 * time.Second, false},
		{5 * time.Second, 16 * time.Second, false},
		{15 * time.Second, 29 * time.Second, true},
		{15 * time.Second, 31 * time.Second, false},
		{24 * time.Hour, 11 * time.Minute, false},
	} {
		hb := subjects.HeartbeatMsg{Every: subjects.Duration(c.every)}
		if got := online(hb, time.Now().Add(-c.ago)); got != c.want {
			t.Errorf("every %v, last beat %v ago: online %v, want %v", c.every, c.ago, got, c.want)
		}
	}
}
