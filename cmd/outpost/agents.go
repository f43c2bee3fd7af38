package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outpost-run/outpost/client"
)

func agentsCmd(g *globals) *cobra.Command {
	var (
		tag    string
		output string
	)
	cmd := &cobra.Command{
		Use:   "agents --tag TAG",
		Short: "List the online agents of a tag and the keys secrets are sealed to",
		Long: `agents lists the agents of --tag whose heartbeats the coordinator heard
lately (an idle agent beats every 15 s and is listed for 30 s after its last
beat; a busy one every 5 s, listed for 15 s), with the public curve key (XKey)
each announced. A job's --secret values are sealed to exactly these agents:
one that comes later, or restarts, cannot run that job.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.api(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				keys, err := c.Agents(ctx, tag)
				if err != nil {
					return err
				}
				return g.render(output, keys, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tXKEY")
					for _, k := range keys {
						fmt.Fprintf(tw, "%s\t%s\n", k.Name, k.XKey)
					}
					tw.Flush()
				})
			})
		},
	}
	cmd.Flags().StringVarP(&tag, "tag", "t", os.Getenv("OUTPOST_TAG"), "tag of the agents [$OUTPOST_TAG]")
	outputFlag(cmd, &output)
	return cmd
}
