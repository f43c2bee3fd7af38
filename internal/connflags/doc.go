// Package connflags holds the flags with which Outpost's commands say where
// NATS is, whose creds to use and how to speak TLS, so all three commands
// spell them, and read them from the environment, the same way.
package connflags
