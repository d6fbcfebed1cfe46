// Command legacynode runs one legacy (original bilibili/discovery) fake node
// as a real process, so multi-process tests can kill -9 it. SIGTERM or SIGINT
// stop it gracefully (own record cancelled on peers).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/discovery-go/discovery/test/legacy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "legacynode:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg legacy.Config
	var nodes, zones, addrFile string
	fs := flag.NewFlagSet("legacynode", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:0", "listen address")
	fs.StringVar(&cfg.Advertise, "advertise", "", "advertised host:port (default: the bound address)")
	fs.StringVar(&cfg.Env, "env", "dev", "deploy env")
	fs.StringVar(&cfg.Zone, "zone", "zone01", "zone")
	fs.StringVar(&cfg.Region, "region", "region01", "region")
	fs.StringVar(&cfg.Hostname, "hostname", "", "hostname of the own record (default: the advertised address)")
	fs.StringVar(&nodes, "nodes", "", "same-zone nodes, comma list of host:port (may include self)")
	fs.StringVar(&zones, "zones", "", "other zones: zoneB=h1:7171|h2:7171;zoneC=h3:7171")
	fs.BoolVar(&cfg.EnableProtect, "enable-protect", false, "start in init-protect mode")
	fs.DurationVar(&cfg.ProtectTimeout, "protect-timeout", 60*time.Second, "init-protect ends after this without a sync")
	fs.DurationVar(&cfg.PollHold, "poll-hold", 30*time.Second, "longest poll hold")
	fs.DurationVar(&cfg.RenewInterval, "renew-interval", 30*time.Second, "own record renew interval")
	fs.DurationVar(&cfg.EvictInterval, "evict-interval", 60*time.Second, "eviction scan interval")
	fs.DurationVar(&cfg.EvictAfter, "evict-after", 90*time.Second, "evict after this long without renew")
	fs.DurationVar(&cfg.ProtectedEvictAfter, "protected-evict-after", time.Hour, "evict after this long without renew while protected")
	fs.DurationVar(&cfg.ForwardTimeout, "forward-timeout", 3*time.Second, "timeout of each forward / sync request")
	fs.StringVar(&addrFile, "addr-file", "", `write {"http":"host:port"} here once serving`)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	for _, a := range strings.Split(nodes, ",") {
		if a = strings.TrimSpace(a); a != "" {
			cfg.Nodes = append(cfg.Nodes, a)
		}
	}
	zm, err := parseZones(zones)
	if err != nil {
		return err
	}
	cfg.Zones = zm
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// Subscribe before starting so a SIGTERM during start-up is not lost.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)

	n, err := legacy.Start(cfg)
	if err != nil {
		return err
	}
	if addrFile != "" {
		if err := writeAddrFile(addrFile, n.Addr()); err != nil {
			n.Kill()
			return err
		}
	}
	s := <-sig
	cfg.Logger.Info("signal, closing", "signal", s.String())
	return n.Close()
}

// parseZones reads "zoneB=h1:7171|h2:7171;zoneC=h3:7171".
func parseZones(s string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, part := range strings.Split(s, ";") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		name, list, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("bad --zones element %q (want zone=h1:port|h2:port)", part)
		}
		for _, a := range strings.Split(list, "|") {
			if a = strings.TrimSpace(a); a != "" {
				out[strings.TrimSpace(name)] = append(out[strings.TrimSpace(name)], a)
			}
		}
	}
	return out, nil
}

// writeAddrFile writes atomically (temp file + rename) so a reader never sees
// a partial file.
func writeAddrFile(path, addr string) error {
	b, err := json.Marshal(map[string]string{"http": addr})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".addr-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return nil
}
