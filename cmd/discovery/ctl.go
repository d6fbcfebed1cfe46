package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/discovery-go/discovery/api/ctl"
)

// ctlCmd is the operator's command line for a running cluster; Ctrl-C
// ends a watch.
func ctlCmd(args, environ []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return ctl.Main(ctx, args, environ, stdout, stderr)
}
