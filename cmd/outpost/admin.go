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

func adminCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Issue, list and revoke credentials (admins only)",
	}
	agent := &cobra.Command{Use: "agent", Short: "Agent credentials"}
	agent.AddCommand(issueCmd(g, "agent"))
	user := &cobra.Command{Use: "user", Short: "User, observer and admin credentials"}
	user.AddCommand(issueCmd(g, ""))
	cmd.AddCommand(agent, user, credsCmd(g), revokeCmd(g))
	return cmd
}

// issueCmd is 'admin agent add' (role fixed to agent) or 'admin user add'.
func issueCmd(g *globals, fixedRole string) *cobra.Command {
	var (
		req     subjects.IssueRequest
		expires time.Duration
	)
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Issue a credential with a fresh key pair; its creds file goes to stdout",
		Long: `add issues a credential and prints its creds file, the only copy of its seed,
on stdout: redirect it to a file and hand it over securely. The coordinator
keeps only the public key and JWT.`,
		Example: `  outpost admin agent add gpu-1 --tag gpu > gpu-1.creds
  outpost admin agent add site-berlin --tag berlin --leaf > site-berlin.creds   # for deploy/nats/leaf.conf
  outpost admin user add alice --role user --tag gpu --expires 720h > alice.creds`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if fixedRole != "" {
				req.Role = fixedRole
			}
			req.Expires = subjects.Duration(expires)
			return g.api(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				cred, creds, err := c.Issue(ctx, req)
				if err != nil {
					return err
				}
				if _, err := io.WriteString(g.stdout, creds); err != nil {
					return err
				}
				fmt.Fprintf(g.stderr, "issued %s credential %q (tags: %s, key %s); the creds file above holds its only seed\n",
					cred.Role, cred.Name, strings.Join(cred.Tags, ", "), cred.PublicKey)
				return nil
			})
		},
	}
	f := cmd.Flags()
	if fixedRole == "" {
		f.StringVar(&req.Role, "role", "user", "user, observer or admin")
		_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"user", "observer", "admin"}, cobra.ShellCompDirectiveNoFileComp))
	}
	f.StringArrayVarP(&req.Tags, "tag", "t", nil, "tag the credential serves, reads or submits to (repeatable)")
	f.DurationVar(&expires, "expires", 0, "lifetime, such as 720h (default: never expires)")
	if fixedRole == "agent" {
		f.BoolVar(&req.Leaf, "leaf", false, "for a site's leaf node (deploy/nats/leaf.conf); the site's agents use the same creds")
	}
	return cmd
}

func credsCmd(g *globals) *cobra.Command {
	var req subjects.CredsRequest
	var output string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List credentials: name, role, tags, key, issued, expires, last seen, revoked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.api(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				creds, err := c.Credentials(ctx, req)
				if err != nil {
					return err
				}
				return g.render(output, creds, func(w io.Writer) { printCreds(w, creds) })
			})
		},
	}
	cmd.Flags().StringVar(&req.Role, "role", "", "only this role")
	outputFlag(cmd, &output)
	return cmd
}

func revokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a credential: its live connection closes and it can never connect again",
		Long: `revoke adds the credential's key to the account's revocations and pushes the
account to the servers, which close its connection at once. A revoked agent's
unfinished jobs go back to the queue for another agent of its tag.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.api(cmd.Context(), func(ctx context.Context, c *client.Conn) error {
				cred, err := c.Revoke(ctx, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "revoked %s credential %q (key %s)\n", cred.Role, cred.Name, cred.PublicKey)
				return nil
			})
		},
	}
}

func auditCmd(g *globals) *cobra.Command {
	var (
		followFlag bool
		output     string
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit trail of API calls and credential changes (admins and observers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			if output != "json" {
				fmt.Fprintln(tw, "AT\tCALLER\tROLE\tVERB\tTARGET\tRESULT\tMESSAGE")
			}
			err = c.ReadAudit(cmd.Context(), followFlag, func(e subjects.AuditEntry) error {
				if output == "json" {
					return printJSON(g.stdout, e)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.At.Local().Format(time.RFC3339), e.Caller, e.Role, e.Verb, e.Target, e.Result, e.Message)
				if followFlag {
					return tw.Flush()
				}
				return nil
			})
			tw.Flush()
			if cmd.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&followFlag, "follow", "f", false, "keep printing new entries")
	outputFlag(cmd, &output)
	return cmd
}

func printCreds(w io.Writer, creds []subjects.Credential) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tTAGS\tPUBLIC KEY\tISSUED\tEXPIRES\tLAST SEEN\tREVOKED")
	when := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Local().Format("2006-01-02 15:04")
	}
	for _, c := range creds {
		tags := strings.Join(c.Tags, ",")
		if tags == "" {
			tags = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Role, tags, c.PublicKey, when(&c.IssuedAt), when(c.ExpiresAt), when(c.LastSeen), when(c.RevokedAt))
	}
	tw.Flush()
}
