package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/discovery-go/discovery/configs"
)

// healthCmd asks a node whether it is ready. It is the container
// HEALTHCHECK (the image has no shell or curl), so it needs nothing but the
// binary and the node's environment.
func healthCmd(args, environ []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("health", stderr)
	addr := fs.String("addr", "", "host:port of the node (default: the port of http.addr on 127.0.0.1, or on http.addr's host when it names one)")
	timeout := fs.Duration("timeout", 2*time.Second, "time limit of the check")
	configs.AddFlags(fs)
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "discovery health: --timeout must be > 0, got %s\n", *timeout)
		return exitUsage
	}
	target := *addr
	if target == "" {
		cfg, ok := loadConfig(fs, environ, stderr)
		if !ok {
			return exitUsage
		}
		t, err := localAddr(cfg.HTTP.Addr)
		if err != nil {
			fmt.Fprintf(stderr, "discovery health: %v\n", err)
			return exitUsage
		}
		target = t
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	status, err := readyz(ctx, target)
	if err != nil {
		fmt.Fprintf(stderr, "discovery health: %s: %v\n", target, err)
		return exitFailure
	}
	if status != http.StatusOK {
		fmt.Fprintf(stderr, "discovery health: %s: not ready (HTTP %d)\n", target, status)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: ready\n", target)
	return exitOK
}

// localAddr turns the listen address into one to dial from the same host:
// an empty or unspecified host becomes 127.0.0.1.
func localAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("http.addr %q: %w", listen, err)
	}
	if port == "0" {
		return "", fmt.Errorf("http.addr %q has no fixed port; give --addr", listen)
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// readyz GETs http://addr/readyz and returns the HTTP status.
func readyz(ctx context.Context, addr string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return 0, err
	}
	// No proxy from the environment (a container's HTTP_PROXY must not
	// route a local check) and no idle connection left behind.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}
