// Package testkit is the one test toolkit of this repository: waiting for
// a condition with a deadline instead of sleeping, test loggers and log
// capture, and the shared goleak setup. It is its own small module so the
// server's tests and the SDK module's tests use the same helpers without
// the SDK depending on the server; being internal, nothing outside this
// repository can import it.
package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// PollInterval is how often Eventually re-checks its condition.
const PollInterval = 10 * time.Millisecond

// Eventually calls cond until it returns nil and returns how long that
// took. If timeout passes first it fails tb with what and the last error,
// so a failure says what was still wrong.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() error) time.Duration {
	tb.Helper()
	d, err := Within(timeout, cond)
	if err != nil {
		tb.Fatalf("%s: not reached within %s: last: %v", what, timeout, err)
	}
	return d
}

// EventuallyTrue is Eventually for a plain condition.
func EventuallyTrue(tb testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	return Eventually(tb, timeout, what, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("%s: still false", what)
	})
}

// Poll is Eventually with its own polling interval (for conditions that
// are expensive to check, e.g. a docker command).
func Poll(tb testing.TB, timeout, interval time.Duration, what string, cond func() error) time.Duration {
	tb.Helper()
	d, err := WithinEvery(context.Background(), timeout, interval, cond)
	if err != nil {
		tb.Fatalf("%s: not reached within %s: last: %v", what, timeout, err)
	}
	return d
}

// State turns a condition and a description of what was seen into the
// error Eventually wants: nil when ok, else the description.
func State(ok bool, seen string) error {
	if ok {
		return nil
	}
	return errors.New(seen)
}

// Within is Eventually without a test: it returns the time taken, or the
// last error if timeout passed first.
func Within(timeout time.Duration, cond func() error) (time.Duration, error) {
	return WithinContext(context.Background(), timeout, cond)
}

// WithinContext is Within that also stops when ctx ends (returning the
// last error, or ctx's when cond never ran).
func WithinContext(ctx context.Context, timeout time.Duration, cond func() error) (time.Duration, error) {
	return WithinEvery(ctx, timeout, PollInterval, cond)
}

// WithinEvery is WithinContext with its own polling interval.
func WithinEvery(ctx context.Context, timeout, interval time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return time.Since(start), err
		}
	}
}

// Context returns a context that is cancelled when tb ends (t.Context of
// newer Go; the SDK module's tests build with Go 1.22).
func Context(tb testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	return ctx
}

// Writer returns an io.Writer that logs each line through tb.Log, so the
// text shows only for failing tests (or with -v), and never after the test
// ended (late lines from goroutines being stopped are dropped).
func Writer(tb testing.TB) *TBWriter {
	w := &TBWriter{tb: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

// TBWriter is the writer of Writer.
type TBWriter struct {
	tb   testing.TB
	mu   sync.Mutex
	done bool
	part []byte
}

func (w *TBWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			break
		}
		w.tb.Log(string(w.part[:i]))
		w.part = w.part[i+1:]
	}
	return len(p), nil
}

// Logger returns a text logger at level that writes through Writer(tb).
func Logger(tb testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(Writer(tb), &slog.HandlerOptions{Level: level}))
}

// Logs records what a logger wrote, for tests that assert on log lines.
// Safe for concurrent use.
type Logs struct {
	mu      sync.Mutex
	records []Record
}

// Record is one captured log record: message, level and its attributes
// rendered as key=value text.
type Record struct {
	Level   slog.Level
	Message string
	Attrs   map[string]string
}

// CaptureLogs returns a logger whose records at level and above are kept
// in the returned Logs and also written to tb's log.
func CaptureLogs(tb testing.TB, level slog.Level) (*slog.Logger, *Logs) {
	l := &Logs{}
	h := &captureHandler{logs: l, level: level, next: slog.NewTextHandler(Writer(tb), &slog.HandlerOptions{Level: level})}
	return slog.New(h), l
}

// All returns a copy of the records so far.
func (l *Logs) All() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Record(nil), l.records...)
}

// Count returns how many records have a message containing msg.
func (l *Logs) Count(msg string) int {
	n := 0
	for _, r := range l.All() {
		if strings.Contains(r.Message, msg) {
			n++
		}
	}
	return n
}

// Find returns the first record whose message contains msg.
func (l *Logs) Find(msg string) (Record, bool) {
	for _, r := range l.All() {
		if strings.Contains(r.Message, msg) {
			return r, true
		}
	}
	return Record{}, false
}

type captureHandler struct {
	logs  *Logs
	level slog.Level
	attrs map[string]string // from WithAttrs, keys already prefixed
	group string            // prefix of later attributes ("a.b.")
	next  slog.Handler
}

func (h *captureHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *captureHandler) Handle(ctx context.Context, r slog.Record) error {
	rec := Record{Level: r.Level, Message: r.Message, Attrs: map[string]string{}}
	for k, v := range h.attrs {
		rec.Attrs[k] = v
	}
	r.Attrs(func(a slog.Attr) bool { rec.Attrs[h.group+a.Key] = a.Value.String(); return true })
	h.logs.mu.Lock()
	h.logs.records = append(h.logs.records, rec)
	h.logs.mu.Unlock()
	return h.next.Handle(ctx, r)
}

func (h *captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = make(map[string]string, len(h.attrs)+len(as))
	for k, v := range h.attrs {
		c.attrs[k] = v
	}
	for _, a := range as {
		c.attrs[h.group+a.Key] = a.Value.String()
	}
	c.next = h.next.WithAttrs(as)
	return &c
}

func (h *captureHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.group = h.group + name + "."
	c.next = h.next.WithGroup(name)
	return &c
}

// LeakOptions are the goleak options every package of this repository
// shares; each ignore says why it is not a leak of ours.
func LeakOptions(extra ...goleak.Option) []goleak.Option {
	return append([]goleak.Option{
		// memberlist's Shutdown does not wait for an in-flight probe: one
		// probeNode goroutine may still be parked on its timer for up to
		// ProbeInterval after Shutdown returns.
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
	}, extra...)
}

// VerifyTestMain runs the package's tests and fails the run if goroutines
// are left behind (goleak with LeakOptions).
func VerifyTestMain(m *testing.M, extra ...goleak.Option) {
	goleak.VerifyTestMain(m, LeakOptions(extra...)...)
}

// NoLeaks records the goroutines running now and, when tb ends (after the
// cleanups registered later), fails it if any others are left. Not usable
// with t.Parallel.
func NoLeaks(tb testing.TB, extra ...goleak.Option) {
	cur := goleak.IgnoreCurrent()
	tb.Cleanup(func() {
		tb.Helper()
		goleak.VerifyNone(tb, LeakOptions(append([]goleak.Option{cur}, extra...)...)...)
	})
}
