// Package accounts holds Outpost's identity: the operator, the SYS and
// OUTPOST accounts, one scoped signing key per role whose permission
// templates the NATS server enforces, and the user credentials signed with
// them.
//
// Everything is kept in one directory with owner-only permissions. A
// credential carries only its name and tags; what it may do lives on its
// role's signing key (see Permissions), so the server, not Outpost, is the
// gate. Names and tags are validated before anything is signed, because the
// server pastes them into permission subjects unchecked.
package accounts
