package testkit

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

func TestMain(m *testing.M) { VerifyTestMain(m) }

func TestWithin(t *testing.T) {
	var n atomic.Int32
	d, err := Within(time.Second, func() error {
		if n.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n.Load() != 3 || d <= 0 {
		t.Fatalf("d=%v err=%v n=%d", d, err, n.Load())
	}
	_, err = Within(30*time.Millisecond, func() error { return errors.New("never") })
	if err == nil || err.Error() != "never" {
		t.Fatalf("err = %v, want the last error", err)
	}
}

func TestCaptureLogs(t *testing.T) {
	log, logs := CaptureLogs(t, slog.LevelInfo)
	log.With("node", "n1").WithGroup("g").Info("peer added", "peer", "p2")
	log.Debug("hidden")
	r, ok := logs.Find("peer added")
	if !ok || r.Attrs["node"] != "n1" || r.Attrs["g.peer"] != "p2" || logs.Count("hidden") != 0 {
		t.Fatalf("records %+v", logs.All())
	}
}
