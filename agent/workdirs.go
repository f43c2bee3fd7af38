package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
)

// workDirPool bounds how many emptied work directories an agent keeps.
const workDirPool = 16

// workDirs hands each run a work directory of its own: one that an
// earlier run left as it got it, or a new one. A new one costs a mkdir, and
// its removal an rmdir, in the work root that every run shares: on ext4
// the two were a sixth of a trivial job's agent CPU, and the mkdir a tenth
// of its dispatch.
//
// Directories are named run-<pid>-<token>-<n>: unique among agents that
// share a work root (one that drains beside its successor, or agents of
// containers that are all pid 1), and telling which agent process made
// them, so that an agent that starts removes those of agents gone.
type workDirs struct {
	root   string
	prefix string
	runAs  *jobUser
	n      atomic.Uint64
	free   spares[string]
}

func newWorkDirs(root string, runAs *jobUser) (*workDirs, error) {
	token := make([]byte, 4)
	if _, err := rand.Read(token); err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	w := &workDirs{root: root, runAs: runAs, free: spares[string]{max: workDirPool}, prefix: "run-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(token) + "-"}
	w.removeDead()
	return w, nil
}

// take returns an empty directory for a run.
func (w *workDirs) take() (string, error) {
	if dir, ok := w.free.take(); ok {
		return dir, nil
	}
	dir := filepath.Join(w.root, w.prefix+strconv.FormatUint(w.n.Add(1), 10))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	return dir, nil
}

// give takes a run's directory back. It keeps it for a later run only if
// nothing of the run is left that could still write into it (ended is
// true: the run's cgroup was emptied) and it is as take handed it out: an
// empty directory, of mode 0700 and the owner jobs run as. Otherwise it
// removes it.
func (w *workDirs) give(dir string, ended bool) {
	if ended && w.asNew(dir) && w.free.put(dir) {
		return
	}
	_ = os.RemoveAll(dir)
}

func (w *workDirs) asNew(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0o700 || !ownedBy(fi, w.runAs) {
		return false
	}
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	return errors.Is(err, io.EOF)
}

// close removes the directories kept; runs that end later remove theirs.
func (w *workDirs) close() {
	for _, dir := range w.free.close() {
		_ = os.RemoveAll(dir)
	}
}

// removeDead removes the work directories of agent processes that are
// gone: one that was killed leaves its runs' directories behind.
func (w *workDirs) removeDead() {
	entries, _ := os.ReadDir(w.root)
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "run-%d-", &pid); err != nil || !e.IsDir() || pid == os.Getpid() || pidExists(pid) {
			continue
		}
		_ = os.RemoveAll(filepath.Join(w.root, e.Name()))
	}
}
