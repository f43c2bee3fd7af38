// Command outpost-bench measures Outpost beside the raw bus and raw exec in
// one run, prints the table and writes it as JSON (see package bench).
package main

import (
	"context"
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
	)
	flag.Parse()
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
