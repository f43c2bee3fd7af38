package agent

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// cgFiles keeps a v1 cgroup's files open for the runs it serves, and
// remembers what it last wrote to each. A kept cgroup serves run after
// run, and opening a cgroup file costs the agent more than the write or
// the read it is for: with the thread moves, these opens were a tenth of a
// trivial job's agent CPU.
type cgFiles struct {
	mu   sync.Mutex
	open map[string]*os.File
	last map[string]string // by path: the value set wrote, if it took
}

func (f *cgFiles) file(path string) (*os.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fh := f.open[path]; fh != nil {
		return fh, nil
	}
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if f.open == nil {
		f.open = map[string]*os.File{}
	}
	f.open[path] = fh
	return fh, nil
}

// write writes value to the file at path. A cgroup file takes each write
// whole, wherever the file's offset is.
func (f *cgFiles) write(path, value string) error {
	fh, err := f.file(path)
	if err == nil {
		_, err = fh.WriteString(value)
	}
	return err
}

// is reports whether value is what set last wrote to the file at path.
func (f *cgFiles) is(path, value string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.last[path]
	return ok && v == value
}

// set writes value to the file at path unless set wrote it there last.
func (f *cgFiles) set(path, value string) error {
	if f.is(path, value) {
		return nil
	}
	err := f.write(path, value)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil {
		f.last = map[string]string{}
	}
	if err != nil {
		delete(f.last, path) // what the file holds now is not known
		return err
	}
	f.last[path] = value
	return nil
}

// move moves the thread tid into the cgroups at dirs.
func (f *cgFiles) move(dirs []string, tid string) error {
	var errs []error
	for _, d := range dirs {
		if err := f.write(filepath.Join(d, "tasks"), tid); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// read reads the file at path from its start: a cgroup file shows its
// figures anew to each read from offset 0. Not so a v1 list of processes
// (cgroup.procs, tasks), which the kernel keeps for a second for the file
// that read it: those are read through a file opened for the read.
func (f *cgFiles) read(path string) ([]byte, error) {
	fh, err := f.file(path)
	if err != nil {
		return nil, err
	}
	for size := 128; ; size *= 4 { // a counter, or memory.oom_control, fits the first
		b := make([]byte, size)
		n, err := fh.ReadAt(b, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if n < size {
			return b[:n], nil
		}
	}
}

// readUint reads a file holding one number.
func (f *cgFiles) readUint(path string) (uint64, error) {
	b, err := f.read(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// close closes the files; the cgroup is about to go.
func (f *cgFiles) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fh := range f.open {
		_ = fh.Close()
	}
	f.open, f.last = nil, nil
}
