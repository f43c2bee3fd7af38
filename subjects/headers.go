package subjects

// Headers of log messages. A log message's payload is one or more whole
// lines of one output stream, each ending in '\n'.
const (
	// HeaderStream names the output stream: StreamStdout or StreamStderr.
	HeaderStream = "Outpost-Stream"
	// HeaderAttempt is the attempt the lines belong to.
	HeaderAttempt = "Outpost-Attempt"
	// HeaderSeq is the number of the message's first line. Lines are numbered
	// from 1 per attempt, across both output streams in the order the agent
	// read them, so a reader can restore order and spot a gap.
	HeaderSeq = "Outpost-Seq"
	// HeaderPartial is set to "1" on a chunk of a line longer than MaxLine;
	// the line goes on in the next message.
	HeaderPartial = "Outpost-Partial"
	// HeaderAckWait, on a job request, is the consumer's ack wait (a Go
	// duration): an agent reports progress well within it.
	HeaderAckWait = "Outpost-Ack-Wait"
	// HeaderMsgID is NATS' de-duplication header.
	HeaderMsgID = "Nats-Msg-Id"
)

// Output streams.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// Sizes of log messages.
const (
	// MaxLine is the longest line sent whole; longer ones are split.
	MaxLine = 32 << 10
	// MaxLogMsg is the payload size at which a log message is flushed.
	MaxLogMsg = 64 << 10
)
