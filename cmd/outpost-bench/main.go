// Command outpost-bench measures Outpost beside the raw bus and raw exec in
// one run, prints the table and writes it as JSON (see package bench).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/outpost-run/outpost/bench"
)

func main() {
	var (
		bin     = flag.String("bin", "bin", "directory of the coordinator and agent binaries to measure")
		results = flag.String("results", "bench/results", "where the JSON goes (a timestamped file and latest.json); empty: none")
		work    = flag.String("work", "", "directory for the scratch directory, which is then kept (default: a temporary one, removed)")
		smoke   = flag.Bool("smoke", false, "small counts: checks that every measurement runs, in well under a minute")
		md      = flag.Bool("markdown", false, "print the table as Markdown too, as the README shows it")
		limit   = flag.Duration("timeout", 15*time.Minute, "give up after this long")
		show    = flag.String("show", "", "print a saved report (such as bench/results/latest.json) as a table and as Markdown, and measure nothing")
	)
	flag.Parse()
	if *show != "" {
		if err := showReport(*show); err != nil {
			fmt.Fprintln(os.Stderr, "outpost-bench:", err)
			os.Exit(1)
		}
		return
	}
	counts := bench.Full()
	if *smoke {
		counts = bench.Smoke()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *limit)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	rep, err := bench.Run(ctx, bench.Options{Bin: *bin, Work: *work, Results: *results, Counts: counts, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "outpost-bench:", err)
		os.Exit(1)
	}
	if err := rep.Print(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "outpost-bench:", err)
		os.Exit(1)
	}
	if *md {
		fmt.Println()
		_ = rep.Markdown(os.Stdout)
	}
	if *results != "" {
		fmt.Printf("\nwritten to %s/latest.json\n", *results)
	}
}

func showReport(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := rep.Print(os.Stdout); err != nil {
		return err
	}
	fmt.Println()
	return rep.Markdown(os.Stdout)
}
