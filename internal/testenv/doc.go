// Package testenv starts the real parts of Outpost inside a test: an
// embedded nats-server in operator mode with the Outpost accounts, creds for
// any role, and, on request, a running coordinator and agents. Everything it
// starts is stopped by the test's Cleanup.
//
// It is for tests only: it imports the server, which the agent package
// itself never does. It mocks nothing; a test that needs a condition waits
// for it with a deadline (see Eventually and Logs.Wait), never for a fixed
// time.
package testenv
