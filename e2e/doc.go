// Package e2e holds Outpost's end-to-end tests. TestMain builds the real
// coordinator, agent and outpost binaries once; each test starts its own
// coordinator on a fresh data directory and drives the binaries, the stock
// nats CLI and nats-server, and plain nats.go connections the way users and
// third-party clients would. Nothing is mocked.
//
// Part of the suite needs the nats CLI and nats-server that 'make tools'
// installs; without them those tests are skipped with a note saying so.
package e2e
