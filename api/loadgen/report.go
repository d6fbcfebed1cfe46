package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Histogram records durations in a log-linear layout: values below
// 2*histSub ns are exact, larger ones fall into one of histSub sub-buckets
// per power of two, so a quantile is off by less than 1/histSub (0.8 %).
// Memory is fixed (about 58 KiB) whatever the run length, so a long
// --duration run cannot grow without bound. Min and max are exact.
//
// A Histogram is not safe for concurrent use; each worker owns one and the
// results are merged at the end (Merge), or a caller guards it.
type Histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      float64 // ns; float so a long run cannot overflow
	min, max int64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // sub-buckets per power of two
	// Values < 2*histSub are their own bucket; above that, shifts 1..55
	// (int64 has 63 value bits) each add histSub buckets.
	histBuckets = 2*histSub + (63-histSubBits-1)*histSub
)

// bucketOf returns the bucket index of v (v >= 0).
func bucketOf(v int64) int {
	if v < 2*histSub {
		return int(v)
	}
	s := bits.Len64(uint64(v)) - (histSubBits + 1) // >= 1
	top := v >> s                                  // in [histSub, 2*histSub)
	return 2*histSub + (s-1)*histSub + int(top-histSub)
}

// bucketUpper returns the largest value that falls into bucket i.
func bucketUpper(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	s := (i-2*histSub)/histSub + 1
	top := int64((i-2*histSub)%histSub + histSub)
	return (top+1)<<s - 1
}

// Record adds one duration; negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
}

// Merge adds all values of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest recorded value (0 when empty).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Quantile returns the nearest-rank q-quantile (q in [0,1]): the smallest
// recorded value v such that at least q of all values are <= v, rounded up
// to its bucket's upper bound and clamped to [min, max]. Empty: 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			return time.Duration(min(max(bucketUpper(i), h.min), h.max))
		}
	}
	return time.Duration(h.max) // unreachable: cum reaches n
}

// Stats summarises h in milliseconds.
func (h *Histogram) Stats() Stats {
	if h.n == 0 {
		return Stats{}
	}
	return Stats{
		Count: int64(h.n),
		P50:   ms(h.Quantile(0.50)),
		P90:   ms(h.Quantile(0.90)),
		P99:   ms(h.Quantile(0.99)),
		Max:   ms(h.Max()),
		Mean:  ms(time.Duration(h.sum / float64(h.n))),
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Stats is a latency summary in milliseconds.
type Stats struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// Result is one measured quantity of a scenario (e.g. "register", or
// "lag 127.0.0.1:7172" in the replication scenario).
type Result struct {
	Name string `json:"name"`
	// OK counts successful operations (answered polls for notify).
	OK int64 `json:"ok"`
	// Expected is how many answers were due (notify, replication); 0 when
	// not applicable.
	Expected int64 `json:"expected,omitempty"`
	// OpsPerSec is OK divided by the timed phase; 0 when not a rate.
	OpsPerSec float64 `json:"ops_per_sec,omitempty"`
	Latency   Stats   `json:"latency"`
}

// Report is what one bench run prints: a table, or one JSON object.
type Report struct {
	Scenario    string   `json:"scenario"`
	Nodes       []string `json:"nodes"`
	Concurrency int      `json:"concurrency"`
	Env         string   `json:"env"`
	Zone        string   `json:"zone"`
	// Params holds the scenario's sizes (appids, instances, pollers, ...).
	Params map[string]int64 `json:"params,omitempty"`
	// ElapsedSeconds is the timed phase (setup excluded).
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// CPU of the local nodes and of the load tool during the timed phase.
	CPU *CPUReport `json:"cpu,omitempty"`
	// Memory of the local nodes with every poll parked (notify, cross-notify).
	Memory  *MemoryReport `json:"memory,omitempty"`
	Results []Result      `json:"results"`
	// Errors counts failed operations by discovery code ("-400"), HTTP status
	// ("http_503") or transport failure ("timeout", "transport", ...).
	Errors      map[string]int64 `json:"errors"`
	Notes       []string         `json:"notes,omitempty"`
	Interrupted bool             `json:"interrupted"`
	// Error is set when the run could not complete (setup failure, ...).
	Error string `json:"error,omitempty"`
}

// ErrorTotal returns the number of failed operations.
func (r *Report) ErrorTotal() int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// WriteJSON writes r as one JSON object and a newline.
func (r *Report) WriteJSON(w io.Writer) error {
	if r.Errors == nil {
		r.Errors = map[string]int64{}
	}
	if r.Results == nil {
		r.Results = []Result{}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteTable writes r for a human reader.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "discovery bench %s: nodes %s, concurrency %d, env %q, zone %q\n",
		r.Scenario, strings.Join(r.Nodes, ","), r.Concurrency, r.Env, r.Zone)
	if len(r.Params) > 0 {
		keys := make([]string, 0, len(r.Params))
		for k := range r.Params {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + " " + strconv.FormatInt(r.Params[k], 10)
		}
		fmt.Fprintf(&b, "params: %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "timed phase: %.3fs", r.ElapsedSeconds)
	if r.Interrupted {
		b.WriteString(" (interrupted: partial report)")
	}
	b.WriteString("\n\n")

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "measure\tok\tops/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\tmean ms\t")
	for _, res := range r.Results {
		ok := strconv.FormatInt(res.OK, 10)
		if res.Expected > 0 {
			ok += "/" + strconv.FormatInt(res.Expected, 10)
		}
		rate := "-"
		if res.OpsPerSec > 0 {
			rate = strconv.FormatFloat(res.OpsPerSec, 'f', 1, 64)
		}
		l := res.Latency
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n", res.Name, ok, rate, l.P50, l.P90, l.P99, l.Max, l.Mean)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if c := r.CPU; c != nil {
		b.WriteString("\ncpu: ")
		if len(c.Nodes) > 0 {
			fmt.Fprintf(&b, "nodes %.1f µs/op (%.2f s:", c.NodeMicrosPerOp, c.NodeSeconds)
			for _, n := range c.Nodes {
				fmt.Fprintf(&b, " %s pid %d %.2f s", n.Addr, n.PID, n.Seconds)
			}
			b.WriteString("), ")
		}
		fmt.Fprintf(&b, "bench %.1f µs/op (%.2f s), over %d ops\n", c.BenchMicrosPerOp, c.BenchSeconds, c.Ops)
		if c.Note != "" {
			fmt.Fprintf(&b, "cpu note: %s\n", c.Note)
		}
	}
	if m := r.Memory; m != nil {
		fmt.Fprintf(&b, "memory: %.0f B RSS per parked poll in round 1, at most %.0f B in any round (%d parked on", m.BytesPerParkedPoll, m.MaxBytesPerParkedPoll, m.Parked)
		for _, n := range m.Nodes {
			fmt.Fprintf(&b, " %s pid %d", n.Addr, n.PID)
		}
		b.WriteString(")\n")
	}
	b.WriteString("\nerrors: ")
	if len(r.Errors) == 0 {
		b.WriteString("none")
	} else {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s: %d", k, r.Errors[k])
		}
	}
	b.WriteString("\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "error: %s\n", r.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// errCounter counts failures by key; safe for concurrent use.
type errCounter struct {
	mu sync.Mutex
	m  map[string]int64
}

func (e *errCounter) add(key string) {
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]int64{}
	}
	e.m[key]++
	e.mu.Unlock()
}

// snapshot returns a copy (never nil).
func (e *errCounter) snapshot() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int64, len(e.m))
	for k, v := range e.m {
		out[k] = v
	}
	return out
}
