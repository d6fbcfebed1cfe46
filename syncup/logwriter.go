package syncup

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// mlLogWriter turns memberlist's log lines ("2024/01/02 15:04:05 [WARN]
// memberlist: ...") into slog records at the matching level, so gossip logs
// follow the node's log format and level instead of going to stderr.
//
// memberlist may still log from a probe goroutine after Shutdown returns;
// close stops forwarding so nothing is written once the owner is gone.
type mlLogWriter struct {
	log    *slog.Logger
	mu     sync.RWMutex // guards closed; Write holds it shared while it logs, so close waits for a line in flight
	closed bool
}

func (w *mlLogWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

var mlLevels = []struct {
	tag   []byte
	level slog.Level
}{
	{[]byte("[DEBUG]"), slog.LevelDebug},
	{[]byte("[INFO]"), slog.LevelInfo},
	{[]byte("[WARN]"), slog.LevelWarn},
	{[]byte("[ERR]"), slog.LevelError},
	{[]byte("[ERROR]"), slog.LevelError},
}

func (w *mlLogWriter) Write(p []byte) (int, error) {
	n := len(p)
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return n, nil
	}
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		w.line(line)
	}
	return n, nil
}

func (w *mlLogWriter) line(line []byte) {
	level := slog.LevelInfo
	msg := line
	for _, l := range mlLevels {
		if i := bytes.Index(line, l.tag); i >= 0 {
			level = l.level
			msg = line[i+len(l.tag):]
			break
		}
	}
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 {
		return
	}
	ctx := context.Background()
	if !w.log.Enabled(ctx, level) {
		return
	}
	w.log.Log(ctx, level, string(msg), "source", "memberlist")
}
