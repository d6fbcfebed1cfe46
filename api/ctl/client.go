package ctl

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/discovery-go/discovery/api/wire"
)

// Exit codes scripts can rely on.
const (
	ExitOK          = 0
	ExitFailure     = 1 // anything else: a bad answer, a node not ready (health)
	ExitUsage       = 2 // bad arguments, or -400 from the node
	ExitNotFound    = 3 // -404
	ExitRefused     = 4 // -401 / -403: admin token missing or wrong, or a policy refused the write
	ExitUnreachable = 5 // no node answered
)

// codeError is an answer with a non-zero code.
type codeError struct {
	code int
	msg  string
	node string
}

func (e *codeError) Error() string {
	return fmt.Sprintf("%s answered %d: %s", e.node, e.code, e.msg)
}

// unreachableError: no node could be reached.
type unreachableError struct{ errs []error }

func (e *unreachableError) Error() string {
	return "no node answered: " + errors.Join(e.errs...).Error()
}

// exitCode maps an error to the exit code.
func exitCode(err error) int {
	var ce *codeError
	var ue *unreachableError
	var ua *usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ua):
		return ExitUsage
	case errors.As(err, &ue):
		return ExitUnreachable
	case errors.As(err, &ce):
		switch ce.code {
		case wire.CodeNotFound:
			return ExitNotFound
		case wire.CodeUnauthorized, wire.CodeForbidden:
			return ExitRefused
		case wire.CodeBadRequest:
			return ExitUsage
		}
	}
	return ExitFailure
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// client reaches the cluster: it tries the seed nodes in order and, once
// one answers, learns every node from its infra.discovery records (like the
// SDK and kratos), so later calls fail over to any of them. Codes that mean
// "this node cannot now" (-500, -503) move on to the next node too.
type client struct {
	hc      *http.Client
	scheme  string
	nodes   []string
	learned bool
	env     string
	zone    string
	token   string
	timeout time.Duration
}

type clientConfig struct {
	nodes   []string
	env     string
	zone    string
	token   string
	caFile  string
	timeout time.Duration
}

func newClient(cfg clientConfig) (*client, error) {
	c := &client{scheme: "http", nodes: cfg.nodes, env: cfg.env, zone: cfg.zone, token: cfg.token, timeout: cfg.timeout}
	tr := &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: 3 * time.Second}).DialContext, MaxIdleConnsPerHost: 2}
	if cfg.caFile != "" {
		pem, err := os.ReadFile(cfg.caFile)
		if err != nil {
			return nil, usagef("--ca-file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usagef("--ca-file %s: no PEM certificate in it", cfg.caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		c.scheme = "https"
	}
	c.hc = &http.Client{Transport: tr}
	return c, nil
}

func (c *client) close() { c.hc.CloseIdleConnections() }

// call sends one request with failover and returns the decoded envelope
// of the first node that answers it (code 0 or a code about the request).
func (c *client) call(ctx context.Context, method, path string, params url.Values) (*wire.Envelope, string, error) {
	var errs []error
	tried := map[string]bool{}
	for i := 0; i < len(c.nodes); i++ {
		node := c.nodes[i]
		if tried[node] {
			continue
		}
		tried[node] = true
		env, err := c.once(ctx, node, method, path, params)
		if err != nil {
			if ctx.Err() != nil {
				return nil, "", ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", node, err))
			continue
		}
		if env.Code == wire.CodeServerError || env.Code == wire.CodeUnavailable {
			errs = append(errs, &codeError{env.Code, env.Message, node})
			continue
		}
		if !c.learned {
			c.learn(ctx, node)
		}
		return env, node, nil
	}
	if len(errs) > 0 {
		var ce *codeError
		if errors.As(errs[len(errs)-1], &ce) {
			return nil, "", ce
		}
	}
	return nil, "", &unreachableError{errs}
}

// data calls and returns the data of a code-0 answer, else a codeError.
func (c *client) data(ctx context.Context, method, path string, params url.Values, v any) (string, error) {
	env, node, err := c.call(ctx, method, path, params)
	if err != nil {
		return "", err
	}
	if env.Code != wire.CodeOK {
		return node, &codeError{env.Code, env.Message, node}
	}
	if v != nil && env.Data != nil {
		if err := json.Unmarshal(env.Data, v); err != nil {
			return node, fmt.Errorf("%s: bad data: %w", node, err)
		}
	}
	return node, nil
}

func (c *client) once(ctx context.Context, node, method, path string, params url.Values) (*wire.Envelope, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := c.scheme + "://" + node + path
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(params.Encode())
	} else if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", "discovery-ctl")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b[:min(len(b), 200)]))
	}
	return wire.DecodeEnvelope(b)
}

// learn adds the nodes node lists in infra.discovery (its env, every
// zone, same zone first) behind the seeds.
func (c *client) learn(ctx context.Context, node string) {
	c.learned = true
	env, err := c.once(ctx, node, http.MethodGet, "/discovery/fetch", url.Values{"env": {c.env}, "appid": {wire.InfraAppID}, "status": {"1"}})
	if err != nil || env.Code != wire.CodeOK {
		return
	}
	var info wire.InstanceInfo
	if json.Unmarshal(env.Data, &info) != nil {
		return
	}
	var same, other []string
	for z, list := range info.Instances {
		for _, in := range list {
			for _, a := range in.Addrs {
				u, err := url.Parse(a)
				if err != nil || u.Scheme != c.scheme || u.Host == "" {
					continue
				}
				if z == c.zone {
					same = append(same, u.Host)
				} else {
					other = append(other, u.Host)
				}
			}
		}
	}
	slices.Sort(same)
	slices.Sort(other)
	for _, n := range append(same, other...) {
		if !slices.Contains(c.nodes, n) {
			c.nodes = append(c.nodes, n)
		}
	}
}

// readyz reports whether node answers /readyz 200.
func (c *client) readyz(ctx context.Context, node string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.scheme+"://"+node+"/readyz", nil)
	if err != nil {
		return false, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	return resp.StatusCode == http.StatusOK, nil
}
