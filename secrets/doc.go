// Package secrets seals a job's secrets on the submitter's machine so that
// only the agents they are sealed to can read them, opens them on such an
// agent, and masks their values in the job's output.
//
// It is not a secret store: nothing here keeps a secret anywhere. The
// coordinator, the streams and the buckets only ever hold the sealed form.
package secrets
