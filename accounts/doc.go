// Package accounts holds Outpost's identity: the operator, the SYS
// account, the OUTPOST account (JetStream and the coordinator), and one
// account per credential that imports from OUTPOST only what the
// credential's role may reach.
//
// Everything is kept in one directory with owner-only permissions. A
// credential's reach lives in its own account's imports and in its user
// JWT's permissions, so the server, not Outpost, is the gate; and because a
// credential's account holds nothing else, a reply subject it aims anywhere
// cannot reach JetStream. Names and tags are validated before anything is
// signed, because they become subjects.
package accounts
