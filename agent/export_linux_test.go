package agent

// Alive reports whether pid is a process that is not yet a zombie.
func Alive(pid int) bool { return alive(pid) }
