package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/discovery-go/discovery/configs"
	"github.com/discovery-go/discovery/embed"
)

func serveCmd(args, environ []string, _, stderr io.Writer) int {
	// Catch signals before anything else: a SIGTERM during start-up then
	// leads to the ordered shutdown instead of the default abrupt exit.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)

	fs := newFlagSet("serve", stderr)
	addrFile := fs.String("addr-file", "", `once listening, write {"http":"<advertised host:port>","gossip":"<advertised host:port>","http_listen":"<bound host:port>","gossip_bind":"<bound host:port>","https":"...","https_listen":"..."} to this file (atomically; https only with http.tls.addr)`)
	cfg, code, ok := parseConfig(fs, args, environ, stderr)
	if !ok {
		return code
	}
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "discovery: %v\n", err)
		return exitUsage
	}
	if err := runNode(cfg, nodeOptions{addrFile: *addrFile, signals: sigc, logger: logger}); err != nil {
		logger.Error("node stopped with an error", "err", err)
		return exitFailure
	}
	return exitOK
}

// newLogger builds the process logger: text or JSON on w, level from cfg.
func newLogger(cfg configs.LogConfig, w io.Writer) (*slog.Logger, error) {
	lv, err := cfg.SlogLevel()
	if err != nil {
		return nil, err
	}
	var level slog.LevelVar
	level.Set(lv)
	opts := &slog.HandlerOptions{Level: &level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

type nodeOptions struct {
	addrFile string
	signals  <-chan os.Signal
	logger   *slog.Logger
}

// runNode runs one node (package embed) until a signal arrives, then shuts
// it down in order. It returns nil after a signal (an incomplete drain is
// logged, not returned) and an error when start-up fails or the node stops
// on its own.
func runNode(cfg configs.Config, opt nodeOptions) error {
	log := opt.logger
	n, err := embed.New(cfg, embed.Options{Logger: log, Version: version, Commit: commit})
	if err != nil {
		return err
	}
	if err := n.Start(context.Background()); err != nil {
		return err
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
		defer cancel()
		_ = n.Shutdown(ctx) // logged by the node; an incomplete drain is not a failure
	}
	if opt.addrFile != "" {
		a := n.Addrs()
		if err := writeAddrFile(opt.addrFile, listenAddrs{HTTP: a.HTTP, Gossip: a.Gossip, HTTPListen: a.HTTPListen, GossipBind: a.GossipBind, HTTPS: a.HTTPS, HTTPSListen: a.HTTPSListen}); err != nil {
			stop()
			return fmt.Errorf("--addr-file: %w", err)
		}
		defer func() { _ = os.Remove(opt.addrFile) }()
	}
	select {
	case sig := <-opt.signals:
		log.Info("shutting down", "signal", sig.String())
		stop()
		return nil
	case <-n.Done():
		stop()
		return n.Err()
	}
}

// listenAddrs is the --addr-file content: the advertised addresses (what
// peers and clients use) and the bound ones (they differ behind a proxy or
// NAT, with http.advertise / cluster.advertise).
type listenAddrs struct {
	HTTP       string `json:"http"`
	Gossip     string `json:"gossip"`
	HTTPListen string `json:"http_listen"`
	GossipBind string `json:"gossip_bind"`
	// With http.tls.addr only.
	HTTPS       string `json:"https,omitempty"`
	HTTPSListen string `json:"https_listen,omitempty"`
}

// writeAddrFile writes a into path atomically (temporary file + rename), so
// a reader polling for the file never sees it half written.
func writeAddrFile(path string, a listenAddrs) error {
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // no-op after the rename
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
