// Package agent runs Outpost jobs on one machine. It pulls job requests of
// its tags from their shared consumers, runs each as a process group in its
// own work directory, streams every output line and state change back to
// JetStream (waiting for the acks), and obeys stop requests from the
// coordinator.
//
// An agent only dials out: it needs no listening port, and it never imports
// the NATS server. Its tags come from its credential, so it cannot be told
// to serve a pool its credential does not allow.
package agent
