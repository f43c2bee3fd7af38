package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-run/outpost/client"
	"github.com/outpost-run/outpost/subjects"
)

func runCmd(g *globals) *cobra.Command {
	var (
		spec      subjects.JobSpec
		env       []string
		timeout   time.Duration
		queueWait time.Duration
		stdinFile string
		detach    bool
		output    string
		memory    string
		cpu       string
		pids      int
		secretKVs []string
	)
	cmd := &cobra.Command{
		Use:   "run --tag TAG [flags] -- COMMAND [ARG...]",
		Short: "Run a command on an agent of a tag and stream its output",
		Long: `run submits COMMAND to the agents of --tag and prints its output live: the
job's stdout on stdout and its stderr on stderr. It exits with the job's exit
code (124 when it timed out). Ctrl-C leaves the job running; 'outpost stop' ends
it. With --detach it prints the job ID and returns at once.`,
		Example: `  outpost run --tag local -- sh -c 'echo hi; echo oops >&2; exit 3'
  outpost run --tag gpu --env MODEL=small --timeout 1h -- ./train.sh
  outpost run --tag build --memory 2Gi --cpu 1.5 --pids 500 -- make -j4
  outpost run --tag deploy --secret TOKEN=@token.txt -- ./deploy.sh
  id=$(outpost run --tag local --detach -- make test)`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("no command to run: give it after --, such as 'outpost run --tag local -- echo hi'")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			spec.Command = args
			spec.Timeout = subjects.Duration(timeout)
			spec.QueueTimeout = subjects.Duration(queueWait)
			var err error
			if spec.Env, err = parseEnv(env); err != nil {
				return err
			}
			if spec.Limits, err = parseLimits(memory, cpu, pids); err != nil {
				return err
			}
			if stdinFile != "" {
				if spec.Stdin, err = readInput(stdinFile); err != nil {
					return err
				}
			}
			values, err := parseSecrets(secretKVs)
			if err != nil {
				return err
			}
			if err := spec.Validate(); err != nil {
				return err
			}
			c, err := g.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			sctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			if len(values) > 0 {
				if spec.Secrets, err = c.SealSecrets(sctx, spec.Tag, values); err != nil {
					return fmt.Errorf("--secret: %w", err)
				}
			}
			if detach {
				rec, err := c.Submit(sctx, spec)
				if err != nil {
					return err
				}
				return g.render(output, rec, func(w io.Writer) { fmt.Fprintln(w, rec.ID) })
			}
			p := printer{stdout: g.stdout, stderr: g.stderr}
			rec, err := c.Run(cmd.Context(), spec, client.RunOptions{SubmitTimeout: g.timeout}, p.show)
			if rec == nil {
				return err
			}
			return followed(cmd.Context(), g, rec.ID, &p, err, true)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.StringVarP(&spec.Tag, "tag", "t", os.Getenv("OUTPOST_TAG"), "tag of the agents to run on [$OUTPOST_TAG]")
	f.StringArrayVarP(&env, "env", "e", nil, "environment variable NAME=VALUE for the job (repeatable)")
	f.StringVar(&spec.Dir, "dir", "", "working directory on the agent (relative: inside the job's own)")
	f.DurationVar(&timeout, "timeout", 0, "stop the job after this long (0: no limit)")
	f.DurationVar(&queueWait, "queue-timeout", 0, "fail the job if no agent starts it within this long (0: wait)")
	f.IntVar(&spec.MaxAttempts, "max-attempts", 0, "how many agents may try the job if one is lost (default 3)")
	f.StringVar(&stdinFile, "stdin", "", "file to feed to the job's stdin ('-' for this terminal's stdin)")
	f.StringArrayVarP(&secretKVs, "secret", "s", nil, "secret environment variable NAME=VALUE, NAME=@FILE, or NAME (from this environment); sealed to the tag's online agents and masked as *** in the output (repeatable)")
	f.StringVar(&memory, "memory", "", "memory limit, such as 512Mi or 2G (the agent kills the job past it)")
	f.StringVar(&cpu, "cpu", "", "CPU limit in cores, such as 0.5 or 250m")
	f.IntVar(&pids, "pids", 0, "most processes the job may have at once")
	f.BoolVarP(&detach, "detach", "d", false, "print the job ID and return at once")
	f.StringVarP(&output, "output", "o", "text", "with --detach: text (the ID) or json (the record)")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// follow prints a job's output as it comes. With exitLikeJob it returns the
// job's exit code as an exitError.
func follow(ctx context.Context, g *globals, c *client.Conn, id string, exitLikeJob bool) error {
	p := printer{stdout: g.stdout, stderr: g.stderr}
	err := c.ReadEvents(ctx, id, client.ReadOptions{Follow: true}, p.show)
	return followed(ctx, g, id, &p, err, exitLikeJob)
}

// followed ends a follow of job id that p printed and that ended in err.
func followed(ctx context.Context, g *globals, id string, p *printer, err error, exitLikeJob bool) error {
	if ctx.Err() != nil {
		fmt.Fprintf(g.stderr, "\noutpost: stopped following; job %s goes on (outpost logs -f %s; outpost stop %s)\n", id, id, id)
		return exitError{130}
	}
	if err != nil {
		return err
	}
	if p.end == nil {
		return fmt.Errorf("job %s: the event stream ended before the job did", id)
	}
	if exitLikeJob {
		return jobExit(g, id, p.end)
	}
	return nil
}

// jobExit turns a terminal status into the command's exit: the job's own
// exit code, 124 for a timeout (as timeout(1) does), 1 for anything else.
func jobExit(g *globals, id string, end *subjects.StatusEvent) error {
	code := 1
	if end.ExitCode != nil && *end.ExitCode >= 0 {
		code = *end.ExitCode
	}
	switch {
	case end.State == subjects.StateSucceeded:
		return nil
	case end.State == subjects.StateTimedOut:
		code = 124
	}
	if end.Error != "" && !strings.HasPrefix(end.Error, "exit status ") {
		fmt.Fprintf(g.stderr, "outpost: job %s %s: %s\n", id, end.State, end.Error)
	}
	if code == 0 {
		code = 1
	}
	return exitError{code}
}

// printer writes events as a person reads them: lines to the stream they
// came from, and a note when a new attempt starts.
type printer struct {
	stdout, stderr io.Writer
	started        int // the latest attempt seen running
	end            *subjects.StatusEvent
}

func (p *printer) show(ev client.Event) error {
	if s := ev.Status; s != nil {
		// A requeued job's queued status already carries the new attempt, so
		// the note goes by the attempts seen running.
		if s.State == subjects.StateRunning && s.Attempt > p.started {
			if s.Attempt > 1 {
				fmt.Fprintf(p.stderr, "outpost: attempt %d on agent %s\n", s.Attempt, s.Agent)
			}
			p.started = s.Attempt
		}
		if s.State.Terminal() {
			p.end = s
		}
		return nil
	}
	w := p.stdout
	if ev.Log.Stream == subjects.StreamStderr {
		w = p.stderr
	}
	data := ev.Log.Data
	if ev.Log.Partial {
		data = data[:len(data)-1]
	}
	_, err := w.Write(data)
	return err
}

func parseEnv(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	env := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--env %q: want NAME=VALUE", kv)
		}
		env[k] = v
	}
	return env, nil
}

// parseSecrets reads --secret flags: NAME=VALUE, NAME=@FILE (the file's
// contents less one final newline), or NAME alone for the value of NAME in
// this environment.
func parseSecrets(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	values := map[string]string{}
	for _, kv := range kvs {
		k, v, hasValue := strings.Cut(kv, "=")
		if err := subjects.ValidSecretName(k); err != nil {
			return nil, fmt.Errorf("--secret: %w (want NAME=VALUE, NAME=@FILE or NAME)", err)
		}
		switch {
		case !hasValue:
			var ok bool
			if v, ok = os.LookupEnv(k); !ok {
				return nil, fmt.Errorf("--secret %s: no such variable in this environment", k)
			}
		case strings.HasPrefix(v, "@"):
			b, err := os.ReadFile(v[1:])
			if err != nil {
				return nil, fmt.Errorf("--secret %s: %w", k, err)
			}
			v = strings.TrimSuffix(string(b), "\n")
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("--secret %s: the value contains a NUL byte", k)
		}
		values[k] = v
	}
	return values, nil
}

// parseLimits makes the job's limits from the flags; nil when none is set.
func parseLimits(memory, cpu string, pids int) (*subjects.Limits, error) {
	l := subjects.Limits{Pids: pids}
	var err error
	if memory != "" {
		if l.Memory, err = subjects.ParseBytes(memory); err != nil {
			return nil, fmt.Errorf("--memory: %w", err)
		}
	}
	if cpu != "" {
		if l.CPU, err = subjects.ParseCores(cpu); err != nil {
			return nil, fmt.Errorf("--cpu: %w", err)
		}
	}
	if l.Zero() {
		return nil, nil
	}
	return &l, nil
}

func readInput(path string) (string, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, subjects.MaxSubmitBytes+1))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("--stdin: %w", err)
	}
	return string(b), nil
}

// render writes v as indented JSON with -o json, or as text otherwise.
func (g *globals) render(output string, v any, text func(io.Writer)) error {
	if output == "json" {
		return printJSON(g.stdout, v)
	}
	text(g.stdout)
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
