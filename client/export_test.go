package client

// PullsPerInbox is how many pulls a Puller makes through one inbox.
const PullsPerInbox = pullsPerInbox
