package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/discovery-go/discovery/api/wire"
)

const userAgent = "discovery-go-client"

// roundTrip sends one request to one node and decodes the envelope. Every
// failure except ctx's own end wraps ErrUnavailable or ErrBadResponse; when
// ctx ends its cause is returned instead, so callers can tell "I gave up"
// from "the node failed".
func (c *Client) roundTrip(ctx context.Context, node, method, path string, params url.Values, timeout time.Duration) (*envelope, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := c.scheme + "://" + node + path
	var body io.Reader
	if method == http.MethodGet {
		u += "?" + params.Encode()
	} else {
		body = strings.NewReader(params.Encode())
	}
	req, err := http.NewRequestWithContext(rctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %w", ErrUnavailable, method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("User-Agent", userAgent)
	// The server ends a held poll before this budget (spec 2.6).
	req.Header.Set("x1-bmspy-timeout", strconv.FormatInt(timeout.Milliseconds(), 10))

	fail := func(what string, err error) error {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if rctx.Err() != nil {
			return fmt.Errorf("%w: %s %s on %s: no answer within %s", ErrUnavailable, method, path, node, timeout)
		}
		return fmt.Errorf("%w: %s %s on %s: %s: %w", ErrUnavailable, method, path, node, what, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fail("transport", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s %s on %s: HTTP %d", ErrUnavailable, method, path, node, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		return nil, fail("reading body", err)
	}
	if int64(len(b)) > c.cfg.MaxResponseBytes {
		return nil, fmt.Errorf("%w: %s %s on %s: body exceeds %d bytes", ErrBadResponse, method, path, node, c.cfg.MaxResponseBytes)
	}
	env, err := wire.DecodeEnvelope(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s on %s: %w", ErrBadResponse, method, path, node, err)
	}
	return env, nil
}

// codeErr turns a non-zero code into an error: -404 and -400 are answers
// about the request (not retried), anything else is a node failure.
func codeErr(op, node string, env *envelope) error {
	sentinel := ErrUnavailable
	switch env.Code {
	case -404:
		sentinel = ErrNotFound
	case -400:
		sentinel = ErrRejected
	}
	return fmt.Errorf("%w: %s on %s: code %d (%s)", sentinel, op, node, env.Code, env.Message)
}

func (c *Client) newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = c.cfg.BackoffInitial
	b.MaxInterval = c.cfg.BackoffMax
	b.Multiplier = 2
	b.RandomizationFactor = 0.5
	b.MaxElapsedTime = 0 // bounded by the caller
	b.Reset()
	return b
}

// call runs one request with failover: on a node failure it moves to the
// next node and retries with backoff, for at most RetryTimeout or until ctx
// (or the client) ends. handle inspects a decoded answer; it returns nil,
// a permanent error (ErrNotFound, ErrRejected) or a node failure. Public
// methods bind ctx to the client first; cancel-on-Close deliberately does not.
func (c *Client) call(ctx context.Context, op, method, path string, params url.Values, handle func(node string, env *envelope) error) error {
	var last error
	bo := c.newBackoff()
	bo.MaxElapsedTime = c.cfg.RetryTimeout
	err := backoff.Retry(func() error {
		node := c.nodes.current()
		env, err := c.roundTrip(ctx, node, method, path, params, c.cfg.RequestTimeout)
		if err == nil {
			err = handle(node, env)
		}
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return backoff.Permanent(context.Cause(ctx))
		case permanent(err):
			return backoff.Permanent(err)
		}
		last = err
		c.nodeFailed(node, op, err)
		return err
	}, backoff.WithContext(bo, ctx))
	if err != nil && ctx.Err() != nil && !errors.Is(err, context.Cause(ctx)) {
		err = context.Cause(ctx) // backoff/v4 returns the last attempt's error when ctx ends
	}
	if err != nil && last != nil && !errors.Is(err, last) {
		// ctx ended while retrying: keep the reason and the last node error.
		return fmt.Errorf("%s: %w (last error: %v)", op, err, last) //nolint:errorlint // only ctx's cause is wrapped: the last node error must not make the call look like ErrUnavailable
	}
	return err
}

// bind derives a context that also ends, with cause ErrClosed, when the
// client closes, so every call returns promptly on Close.
func (c *Client) bind(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	unhook := context.AfterFunc(c.ctx, func() { cancel(ErrClosed) })
	return ctx, func() { unhook(); cancel(nil) }
}

// nodeFailed records a node failure and moves the client to the next node.
func (c *Client) nodeFailed(node, op string, err error) {
	next, switched := c.nodes.failed(node)
	if switched {
		c.metrics.nodeSwitches.Inc()
		c.log.Warn("discovery node failed, switching", "node", node, "next", next, "op", op, "err", err)
	} else {
		c.log.Warn("discovery node failed", "node", node, "op", op, "err", err)
	}
}
