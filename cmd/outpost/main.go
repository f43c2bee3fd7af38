// Command outpost is what people type to run commands on Outpost agents and
// to read what they printed.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/internal/connflags"
)

// defaultCreds is where 'make run' leaves the admin's creds.
const defaultCreds = ".outpost/creds/admin.creds"

// exitError carries an exit code other than 1 out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root().ExecuteContext(ctx)
	stop()
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	default:
		fmt.Fprintln(os.Stderr, "outpost:", err)
		os.Exit(1)
	}
}

// globals are the flags every command takes.
type globals struct {
	conn    connflags.Flags
	timeout time.Duration
	stdout  io.Writer
	stderr  io.Writer
}

func root() *cobra.Command {
	g := &globals{stdout: os.Stdout, stderr: os.Stderr}
	cmd := &cobra.Command{
		Use:   "outpost",
		Short: "Run commands on Outpost agents and stream what they print",
		Long: `outpost submits commands to pools of agents (tags), follows and replays their
output, and stops them. It talks to the coordinator over NATS with a creds file:
--creds, $OUTPOST_CREDS, or ./` + defaultCreds + ` as 'make run' leaves it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := cmd.PersistentFlags()
	g.conn.Bind(pf, "creds file (default ./"+defaultCreds+")")
	pf.DurationVar(&g.timeout, "request-timeout", 10*time.Second, "how long to wait for the server and the coordinator")
	cmd.AddCommand(runCmd(g), logsCmd(g), statusCmd(g), lsCmd(g), stopCmd(g), agentsCmd(g), whoamiCmd(g), adminCmd(g), auditCmd(g))
	return cmd
}

// dial connects with the chosen creds.
func (g *globals) dial(ctx context.Context) (*client.Conn, error) {
	d := g.conn.Dial("outpost-cli")
	if d.Creds == "" {
		if _, err := os.Stat(defaultCreds); err != nil {
			return nil, errors.New("no creds file: pass --creds FILE, set OUTPOST_CREDS, or run where 'make run' created ./" + defaultCreds)
		}
		d.Creds = defaultCreds
	}
	d.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	dctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	return client.Dial(dctx, d)
}

// api runs one API call with the call timeout.
func (g *globals) api(ctx context.Context, fn func(ctx context.Context, c *client.Conn) error) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	actx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	return fn(actx, c)
}
