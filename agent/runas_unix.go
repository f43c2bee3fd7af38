//go:build unix

package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// jobUser is the unprivileged user jobs run as (agent --run-as).
type jobUser struct {
	name     string
	uid, gid uint32
	home     string
}

func lookupUser(name string) (*jobUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("--run-as %s: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("--run-as %s: %w", name, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("--run-as %s: that is root, which isolates nothing", name)
	}
	return &jobUser{name: name, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir}, nil
}

// setUser makes the job's process run as u, with u's group and no
// supplementary groups.
func setUser(cmd *exec.Cmd, u *jobUser) {
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}}
}

// unreadableBy checks that u cannot read path: it neither owns it nor may
// read it by its group or as anyone. Jobs run with no supplementary groups,
// so u's own group is the only one that counts.
func unreadableBy(path string, u *jobUser) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	uid, gid, ok := fileOwner(fi)
	if !ok {
		return fmt.Errorf("%s: no owner to check", path)
	}
	mode := fi.Mode().Perm()
	switch {
	case uid == u.uid:
		return fmt.Errorf("%s belongs to %s, whom jobs run as", path, u.name)
	case mode&0o004 != 0:
		return fmt.Errorf("%s is readable by everyone (mode %o)", path, mode)
	case gid == u.gid && mode&0o040 != 0:
		return fmt.Errorf("%s is readable by the group of %s, whom jobs run as (mode %o)", path, u.name, mode)
	}
	return nil
}

// chownTree gives dir and everything in it to u.
func chownTree(dir string, u *jobUser) error {
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(u.uid), int(u.gid))
	})
}

// fileOwner is the owner of the file fi describes.
func fileOwner(fi fs.FileInfo) (uid, gid uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Uid, st.Gid, true
}
