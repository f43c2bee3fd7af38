package subjects

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Bounds on what a job may ask for in its limits.
const (
	// MinMemory is the smallest memory limit: below it a shell cannot start.
	MinMemory = 4 << 20
	// MaxMemory is the largest memory limit (1 PiB).
	MaxMemory = 1 << 50
	// MinCPU and MaxCPU bound the CPU limit in cores. The kernel's smallest
	// quota is 1 ms per 100 ms period.
	MinCPU = 0.01
	MaxCPU = 1024
	// MaxPids bounds the process limit (the kernel's own pid_max ceiling).
	MaxPids = 1 << 22
)

// Limits are the resources a job may use. The agent enforces them with a
// cgroup of the job's own; an agent that cannot returns the job to the
// queue rather than run it without them. A zero field sets no limit.
type Limits struct {
	// Memory is the most memory, in bytes, the job's processes may use
	// together; past it the kernel kills one of them.
	Memory Bytes `json:"memory,omitempty"`
	// CPU is the CPU time per second of wall time, in cores ("0.5" is half a
	// core).
	CPU Cores `json:"cpu,omitempty"`
	// Pids is the most processes (and threads) the job may have at once.
	Pids int `json:"pids,omitempty"`
}

// Zero reports whether l sets no limit at all.
func (l Limits) Zero() bool { return l == Limits{} }

// Validate checks each limit against its bounds; the error names the field.
func (l Limits) Validate() error {
	if l.Memory != 0 && (l.Memory < MinMemory || l.Memory > MaxMemory) {
		return fmt.Errorf("%w: limits.memory %s must lie between %s and %s", ErrBadSpec, l.Memory, Bytes(MinMemory), Bytes(MaxMemory))
	}
	if l.CPU != 0 && (l.CPU < MinCPU || l.CPU > MaxCPU) {
		return fmt.Errorf("%w: limits.cpu %s must lie between %v and %v cores", ErrBadSpec, l.CPU, MinCPU, MaxCPU)
	}
	if l.Pids < 0 || l.Pids > MaxPids {
		return fmt.Errorf("%w: limits.pids %d must lie between 1 and %d", ErrBadSpec, l.Pids, MaxPids)
	}
	return nil
}

// String is the limits as a person writes them, such as
// "memory=512Mi cpu=0.5 pids=100".
func (l Limits) String() string {
	var parts []string
	if l.Memory != 0 {
		parts = append(parts, "memory="+l.Memory.String())
	}
	if l.CPU != 0 {
		parts = append(parts, "cpu="+l.CPU.String())
	}
	if l.Pids != 0 {
		parts = append(parts, "pids="+strconv.Itoa(l.Pids))
	}
	return strings.Join(parts, " ")
}

// Bytes is an amount of memory. In JSON it is a number of bytes, or a
// string with a unit: k, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti
// (powers of 1024), such as "512Mi". It is written as a number.
type Bytes int64

var bytesRE = regexp.MustCompile(`^([0-9]{1,16})(|k|M|G|T|Ki|Mi|Gi|Ti)$`)

var byteUnits = map[string]int64{
	"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
}

// ParseBytes reads an amount such as "512Mi", "2G" or "1048576".
func ParseBytes(s string) (Bytes, error) {
	m := bytesRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("memory %q: want a whole number of bytes, or one with a unit such as 512Mi or 2G (k, M, G, T, Ki, Mi, Gi, Ti)", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	unit := byteUnits[m[2]]
	if err != nil || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("memory %q is too large", s)
	}
	return Bytes(n * unit), nil
}

// String writes the amount with the largest binary unit that divides it.
func (b Bytes) String() string {
	for _, u := range []string{"Ti", "Gi", "Mi", "Ki"} {
		if n := byteUnits[u]; b != 0 && int64(b)%n == 0 {
			return strconv.FormatInt(int64(b)/n, 10) + u
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// UnmarshalJSON reads a whole number of bytes or a string with a unit.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		// A number: digits only, so no fraction or exponent slips through.
		s = string(data)
		if !bytesRE.MatchString(s) {
			return fmt.Errorf("memory %s: want a whole number of bytes or a string such as \"512Mi\"", data)
		}
	}
	v, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// Cores is an amount of CPU in cores. In JSON it is a number (0.5), or a
// string: a number ("0.5") or millicores ("500m").
type Cores float64

var coresRE = regexp.MustCompile(`^([0-9]{1,4}(\.[0-9]{1,6})?|[0-9]{1,7}m)$`)

// ParseCores reads an amount such as "0.5", "2" or "500m".
func ParseCores(s string) (Cores, error) {
	if !coresRE.MatchString(s) {
		return 0, fmt.Errorf("cpu %q: want cores such as 0.5 or 2, or millicores such as 500m", s)
	}
	if milli, ok := strings.CutSuffix(s, "m"); ok {
		n, _ := strconv.ParseInt(milli, 10, 64)
		return Cores(float64(n) / 1000), nil
	}
	v, _ := strconv.ParseFloat(s, 64)
	return Cores(v), nil
}

func (c Cores) String() string { return strconv.FormatFloat(float64(c), 'f', -1, 64) }

// UnmarshalJSON reads a number or a string of cores or millicores.
func (c *Cores) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		s = string(data)
	}
	v, err := ParseCores(s)
	if err != nil {
		return err
	}
	*c = v
	return nil
}
