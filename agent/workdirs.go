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
)

// workDirPool bounds how many emptied work directories an agent keeps.
const workDirPool = 16

// workDirs hands each run a work directory of its own: one that an
// earlier run left as it got it, or a new one. A new one costs a mkdir, and
// its removal an rmdir, in the work root that every run shares: on ext4
// the two were a sixth of a trivial job's agent CPU, and the mkdir a tenth
// of its dispatch.
//
// Directories are named run-<pid>-<random>: no job can guess another's,
// which matters to an agent with --run-as, whose jobs share a uid and may
// pass through the work root but not list it. Such an agent keeps none for
// a later run either: a job that learnt its directory's name could write
// into it while another user's job has it.
type workDirs struct {
	root  string
	runAs *jobUser
	free  spares[string]
}

func newWorkDirs(root string, runAs *jobUser) *workDirs {
	return &workDirs{root: root, runAs: runAs, free: spares[string]{max: workDirPool}}
}

// take returns an empty directory for a run.
func (w *workDirs) take() (string, error) {
	if dir, ok := w.free.take(); ok {
		return dir, nil
	}
	name := make([]byte, 16)
	if _, err := rand.Read(name); err != nil {
		return "", fmt.Errorf("name a work directory: %w", err)
	}
	dir := filepath.Join(w.root, "run-"+strconv.Itoa(os.Getpid())+"-"+hex.EncodeToString(name))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	return dir, nil
}

// give takes a run's directory back. It keeps it for a later run only if
// nothing of the run is left that could still write into it (ended is
// true: the run's cgroup was emptied), no other user's job can know its
// name (see workDirs), and it is as take handed it out: an empty
// directory of mode 0700 and the agent's owner. Otherwise it removes it.
func (w *workDirs) give(dir string, ended bool) {
	if ended && w.runAs == nil && w.asNew(dir) && w.free.put(dir) {
		return
	}
	_ = os.RemoveAll(dir)
}

func (w *workDirs) asNew(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0o700 {
		return false
	}
	if uid, _, ok := fileOwner(fi); !ok || int(uid) != os.Getuid() {
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
