// Package client is the Go client of Outpost: it dials NATS with a creds
// file, calls the coordinator's API, and replays or follows a job's events
// through a reader consumer pinned to the caller's name.
//
// cmd/outpost is a thin shell over it, and the agent dials through it too.
// It holds no server code, so a program that imports it stays small.
package client
