package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/subjects"
)

func logsCmd(g *globals) *cobra.Command {
	var followFlag bool
	cmd := &cobra.Command{
		Use:   "logs JOB",
		Short: "Replay a job's output from the first line; -f follows it to its end",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := subjects.ValidJobID(args[0]); err != nil {
				return err
			}
			c, err := g.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			if followFlag {
				return follow(cmd.Context(), g, c, args[0], false)
			}
			p := printer{stdout: g.stdout, stderr: g.stderr}
			return c.ReadEvents(cmd.Context(), args[0], client.ReadOptions{}, p.show)
		},
	}
	cmd.Flags().BoolVarP(&followFlag, "follow", "f", false, "keep printing until the job ends")
	return cmd
}

func statusCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status JOB",
		Short: "Show a job's state, exit code, agent, attempt and times",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.api(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				rec, err := c.Get(ctx, args[0])
				if err != nil {
					return err
				}
				return g.render(output, rec, func(w io.Writer) { printRecord(w, rec) })
			})
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func lsCmd(g *globals) *cobra.Command {
	var (
		req    subjects.ListRequest
		state  string
		output string
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List jobs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state != "" {
				st, err := subjects.ParseState(state)
				if err != nil {
					return err
				}
				req.State = st
			}
			return g.api(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				recs, err := c.List(ctx, req)
				if err != nil {
					return err
				}
				return g.render(output, recs, func(w io.Writer) { printTable(w, recs) })
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&req.Tag, "tag", "t", "", "only jobs of this tag")
	f.StringVarP(&state, "state", "s", "", "only jobs in this state (queued, running, succeeded, failed, stopped, timed_out)")
	f.StringVar(&req.Owner, "owner", "", "only jobs of this owner")
	f.IntVarP(&req.Limit, "limit", "n", 50, "at most this many jobs")
	_ = cmd.RegisterFlagCompletionFunc("state", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var out []string
		for _, s := range subjects.States {
			out = append(out, string(s))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
	outputFlag(cmd, &output)
	return cmd
}

func stopCmd(g *globals) *cobra.Command {
	var (
		req   subjects.StopRequest
		grace time.Duration
		wait  bool
	)
	cmd := &cobra.Command{
		Use:   "stop JOB",
		Short: "Stop a job: SIGTERM to its process group, SIGKILL after the grace period",
		Long: `stop ends a job in any state. A queued job never starts. A running job's whole
process group gets SIGTERM, then SIGKILL after --grace; --force kills at once.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.ID, req.Grace = args[0], subjects.Duration(grace)
			c, err := g.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			actx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			rec, err := c.Stop(actx, req)
			cancel()
			if err != nil {
				return err
			}
			if rec.State.Terminal() {
				fmt.Fprintf(g.stdout, "job %s %s\n", rec.ID, rec.State)
				return nil
			}
			fmt.Fprintf(g.stdout, "job %s: stop sent to its agent\n", rec.ID)
			if !wait {
				return nil
			}
			p := printer{stdout: io.Discard, stderr: io.Discard}
			err = c.ReadEvents(cmd.Context(), rec.ID, client.ReadOptions{Follow: true}, p.show)
			if cmd.Context().Err() != nil || p.end == nil {
				fmt.Fprintf(g.stderr, "outpost: stopped waiting; see 'outpost status %s'\n", rec.ID)
				return exitError{130}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "job %s %s\n", rec.ID, p.end.State)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&req.Force, "force", false, "SIGKILL at once")
	f.DurationVar(&grace, "grace", 0, "time between SIGTERM and SIGKILL (default: the agent's, 10s)")
	f.BoolVarP(&wait, "wait", "w", false, "wait until the job has ended")
	return cmd
}

func whoamiCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the name, role and tags of the creds in use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			id := c.Identity
			fmt.Fprintf(g.stdout, "name: %s\nrole: %s\ntags: %s\nkey:  %s\nserver: %s\n", id.Name, id.Role, strings.Join(id.Tags, ", "), id.PublicKey, c.ConnectedUrlRedacted())
			return nil
		},
	}
}

func outputFlag(cmd *cobra.Command, output *string) {
	cmd.Flags().StringVarP(output, "output", "o", "text", "output format: text or json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
}

func printRecord(w io.Writer, r *subjects.Record) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("job", r.ID)
	row("state", string(r.State))
	if r.ExitCode != nil {
		row("exit code", fmt.Sprint(*r.ExitCode))
	}
	row("error", r.Error)
	row("reason", r.Reason)
	row("tag", r.Tag)
	row("owner", r.Owner)
	row("agent", r.Agent)
	row("attempt", fmt.Sprintf("%d of %d", r.Attempt, r.MaxAttempts))
	row("command", shellQuote(r.Command))
	row("submitted", r.SubmittedAt.Local().Format(time.RFC3339Nano))
	if r.StartedAt != nil {
		row("started", r.StartedAt.Local().Format(time.RFC3339Nano))
	}
	if r.FinishedAt != nil {
		took := ""
		if r.StartedAt != nil {
			took = fmt.Sprintf(" (ran %s)", r.FinishedAt.Sub(*r.StartedAt).Round(time.Millisecond))
		}
		row("finished", r.FinishedAt.Local().Format(time.RFC3339Nano)+took)
	}
	if r.Limits != nil {
		row("limits", r.Limits.String())
	}
	if r.PeakMemoryBytes > 0 {
		row("peak memory", subjects.Bytes(r.PeakMemoryBytes).String()+" ("+fmt.Sprint(r.PeakMemoryBytes)+" bytes)")
	}
	if r.CPUSeconds > 0 {
		row("cpu time", fmt.Sprintf("%.3fs", r.CPUSeconds))
	}
	if r.StopRequested && !r.State.Terminal() {
		row("note", "stop requested")
	}
	tw.Flush()
}

func printTable(w io.Writer, recs []subjects.Record) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tTAG\tSTATE\tEXIT\tOWNER\tSUBMITTED\tCOMMAND")
	for _, r := range recs {
		exit := "-"
		if r.ExitCode != nil {
			exit = fmt.Sprint(*r.ExitCode)
		}
		cmd := shellQuote(r.Command)
		if len(cmd) > 50 {
			cmd = cmd[:47] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Tag, r.State, exit, r.Owner, r.SubmittedAt.Local().Format("2006-01-02 15:04:05"), cmd)
	}
	tw.Flush()
}

func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}
