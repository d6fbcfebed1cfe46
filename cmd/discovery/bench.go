package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/discovery-go/discovery/api/loadgen"
)

// benchCmd runs the HTTP load tool against running nodes; Ctrl-C stops it
// with a partial report.
func benchCmd(args, _ []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	exe, err := os.Executable()
	if err != nil {
		exe = "" // the notify change is then sent in process
	}
	return loadgen.MainExe(ctx, exe, args, stdout, stderr)
}
