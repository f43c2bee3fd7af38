// Package bench measures Outpost beside the parts it is built from, in one
// run on one machine: raw exec of /bin/true, a raw JetStream work loop,
// raw async publishes and a raw replay (nats.go and os/exec only, against
// the same embedded server), then Outpost's dispatch latency, job
// throughput, log throughput, fan-in of idle agents and a queued backlog,
// with the real coordinator and agent binaries and the agent and client
// packages.
//
// Run builds a Report: every Outpost figure beside its baseline, the ratio
// and the target it is held to. It is what 'make bench' prints and writes
// under bench/results; 'make bench-smoke' runs it with small counts so the
// code keeps working. It is not a test of correctness, and its figures are
// only as quiet as the machine it runs on.
package bench
