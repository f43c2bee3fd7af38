//go:build unix

package agent

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The gate holds a job until the watchdog knows its process group, and an
// agent that dies before that (here: gives up) never lets it run.
func TestGate(t *testing.T) {
	w, err := startWatchdog()
	if err != nil {
		t.Skip(err)
	}
	defer w.stop()
	for _, run := range []bool{true, false} {
		dir := t.TempDir()
		cmd := exec.Command("sh", "-c", `echo "$0|$1" > ran`, "zero", "one two")
		cmd.Dir = dir
		open, err := w.gate(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		open(run)
		err = cmd.Wait()
		b, rerr := os.ReadFile(filepath.Join(dir, "ran"))
		var ee *exec.ExitError
		switch {
		case run && (err != nil || string(b) != "zero|one two\n"):
			t.Errorf("opened: %v, ran %q (%v)", err, b, rerr)
		case !run && (!errors.As(err, &ee) || ee.ExitCode() != 125 || rerr == nil):
			t.Errorf("given up: %v, and the job ran: %v", err, rerr == nil)
		}
	}
	// What exec refuses is not gated, so it fails as before.
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, []byte("echo hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(plain)
	if _, err := w.gate(cmd); err != nil || cmd.Path != plain {
		t.Errorf("a file without #! was gated: %v %s", err, cmd.Path)
	}
}
