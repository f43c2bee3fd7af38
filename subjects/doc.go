// Package subjects is Outpost's wire contract: every NATS subject, stream,
// consumer and bucket name, the validation of the tokens that go into them,
// and the JSON types that travel on them.
//
// It is the one place a subject string is built or parsed. The coordinator,
// the agent, the CLI and third-party clients all build on it, so a change
// here is a change of protocol. It does no I/O.
package subjects
