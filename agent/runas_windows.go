package agent

import (
	"errors"
	"io/fs"
	"os/exec"
)

// jobUser is the user jobs run as; Windows agents have none.
type jobUser struct {
	name string
	home string
}

func lookupUser(string) (*jobUser, error) {
	return nil, errors.New("--run-as is not supported on Windows")
}

func setUser(*exec.Cmd, *jobUser)         {}
func unreadableBy(string, *jobUser) error { return nil }
func chownTree(string, *jobUser) error    { return nil }

// fileOwner tells no owner on Windows, so an agent there keeps no work
// directory for a later run.
func fileOwner(fs.FileInfo) (uid, gid uint32, ok bool) { return 0, 0, false }
