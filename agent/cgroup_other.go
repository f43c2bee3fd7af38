//go:build !linux

package agent

import "errors"

// newCgroups reports that cgroups are Linux's: elsewhere jobs that ask for
// limits go back to the queue.
func newCgroups(string, CgroupOptions) (cgroupHost, error) {
	return nil, errors.New("cgroups exist only on Linux")
}
