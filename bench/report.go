package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is one run: the baselines, and every Outpost figure beside its
// baseline with the ratio and the target.
type Report struct {
	Started   time.Time `json:"started"`
	Seconds   float64   `json:"seconds"`
	Host      Host      `json:"host"`
	Counts    Counts    `json:"counts"`
	Baselines []Figure  `json:"baselines"`
	Rows      []Row     `json:"rows"`
}

// Host says where the run was made, and how busy the machine was: the
// figures are only as quiet as the machine.
type Host struct {
	CPUs       int    `json:"cpus"`
	GOOS       string `json:"goos"`
	GOARCH     string `json:"goarch"`
	GoVersion  string `json:"go_version"`
	Revision   string `json:"revision,omitempty"`
	Modified   bool   `json:"modified,omitempty"`
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
}

// Figure is one measured value.
type Figure struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Row is one Outpost figure beside its baseline. Ratio is Outpost over
// the baseline. A row without a target is there to be read, not judged.
type Row struct {
	Figure
	Baseline *Figure `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"`
	Target   string  `json:"target,omitempty"`
	Pass     *bool   `json:"pass,omitempty"`
}

func newReport(c Counts) *Report {
	r := &Report{Started: time.Now().UTC(), Counts: c, Host: Host{
		CPUs: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, GoVersion: runtime.Version(), LoadBefore: loadavg(),
	}}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				r.Host.Revision = s.Value
			case "vcs.modified":
				r.Host.Modified = s.Value == "true"
			}
		}
	}
	return r
}

func (r *Report) finish() {
	r.Seconds = time.Since(r.Started).Seconds()
	r.Host.LoadAfter = loadavg()
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// baseline records a baseline figure and returns a copy of it.
func (r *Report) baseline(name string, value float64, unit string) *Figure {
	f := Figure{Name: name, Value: value, Unit: unit}
	r.Baselines = append(r.Baselines, f)
	return &f
}

// target is what a row is held to: a bound on its own value.
type target struct {
	text   string
	atMost bool
	bound  float64
}

func atMost(bound float64, text string) *target {
	return &target{text: text, atMost: true, bound: bound}
}
func atLeast(bound float64, text string) *target { return &target{text: text, bound: bound} }

// row adds an Outpost figure, beside base (nil for none) and held to t
// (nil for none).
func (r *Report) row(name string, value float64, unit string, base *Figure, t *target) {
	row := Row{Figure: Figure{Name: name, Value: value, Unit: unit}}
	if base != nil {
		b := *base
		row.Baseline = &b
		if b.Value != 0 {
			row.Ratio = value / b.Value
		}
	}
	if t != nil {
		pass := value >= t.bound
		if t.atMost {
			pass = value <= t.bound
		}
		row.Target, row.Pass = t.text, &pass
	}
	r.Rows = append(r.Rows, row)
}

// Missed lists the rows that missed their target.
func (r *Report) Missed() []Row {
	return slices.DeleteFunc(slices.Clone(r.Rows), func(row Row) bool { return row.Pass == nil || *row.Pass })
}

// Print writes the baselines and the table.
func (r *Report) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Outpost bench, %s, %d CPUs, load %s -> %s, %.0f s\n\n", r.Started.Format(time.RFC3339), r.Host.CPUs, r.Host.LoadBefore, r.Host.LoadAfter, r.Seconds)
	fmt.Fprintln(tw, "baseline (nats.go and os/exec only)\tvalue\t")
	for _, b := range r.Baselines {
		fmt.Fprintf(tw, "%s\t%s\t\n", b.Name, value(b.Value, b.Unit))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, row := range r.Rows {
		fmt.Fprintln(tw, strings.Join(row.cells("MISS"), "\t")+"\t")
	}
	return tw.Flush()
}

// Markdown writes the table as the README shows it.
func (r *Report) Markdown(w io.Writer) error {
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat("---|", len(header)))
	for _, row := range r.Rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(row.cells("**miss**"), " | "))
	}
	_, err := fmt.Fprintf(w, "\n%d CPUs, load %s -> %s, %s, %.0f s.\n", r.Host.CPUs, r.Host.LoadBefore, r.Host.LoadAfter, r.Started.Format("2006-01-02"), r.Seconds)
	return err
}

var header = []string{"Outpost", "value", "baseline", "ratio", "target", "result"}

// cells are the row's columns as text; miss is how a missed target reads.
func (row Row) cells(miss string) []string {
	base, ratio, target, result := "—", "—", "—", "—"
	if row.Baseline != nil {
		base = value(row.Baseline.Value, row.Baseline.Unit) + " (" + row.Baseline.Name + ")"
		ratio = fmt.Sprintf("%.2f", row.Ratio)
	}
	if row.Target != "" {
		target = row.Target
	}
	if row.Pass != nil {
		result = "pass"
		if !*row.Pass {
			result = miss
		}
	}
	return []string{row.Name, value(row.Value, row.Unit), base, ratio, target, result}
}

// value formats a figure: whole numbers for large values, a few digits for
// small ones.
func value(v float64, unit string) string {
	switch {
	case v >= 1000:
		return thousands(v) + " " + unit
	case v >= 10:
		return fmt.Sprintf("%.0f %s", v, unit)
	default:
		return fmt.Sprintf("%.2f %s", v, unit)
	}
}

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// write stores the report as JSON in dir: a file named by its start time,
// and latest.json.
func (r *Report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	for _, name := range []string{r.Started.Format("20060102T150405Z") + ".json", "latest.json"} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("write results: %w", err)
		}
	}
	return nil
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mb(bytes int64) float64 { return float64(bytes) / (1 << 20) }

func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
