// Package coordinator owns Outpost's job records and API. It embeds a NATS
// server (JetStream, operator mode) by default, or attaches to an existing
// deployment; it sets up the streams, buckets and consumers, answers API
// requests on outpost.api.<name>.<verb>, and folds status events into job
// records.
//
// The coordinator keeps no state that JetStream does not: the job records
// live in a KV bucket and every change arrives as a status event, so it can
// be killed and started again at any time.
package coordinator
