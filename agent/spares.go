package agent

import "sync"

// spares are things an agent keeps for later runs instead of removing and
// making them anew: emptied job cgroups, emptied work directories. At most
// max are kept; after close none are.
type spares[T any] struct {
	max    int
	mu     sync.Mutex
	items  []T
	closed bool
}

// take returns a kept one, if there is one.
func (s *spares[T]) take() (x T, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.items); n > 0 {
		x, s.items = s.items[n-1], s.items[:n-1]
		return x, true
	}
	return x, false
}

// put keeps x, and reports false if there is no room, or close ran: the
// caller removes it then.
func (s *spares[T]) put(x T) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.items) >= s.max {
		return false
	}
	s.items = append(s.items, x)
	return true
}

// close ends the keeping and returns what was kept, for the caller to
// remove.
func (s *spares[T]) close() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	items := s.items
	s.items, s.closed = nil, true
	return items
}
