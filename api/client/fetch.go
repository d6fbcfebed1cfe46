package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// Fetch reads the current UP instances of appid in the client's env once,
// without watching (GET /discovery/fetch, status=1). An appid unknown to the
// node is ErrNotFound. Node failures are retried on other nodes within
// RetryTimeout and ctx.
func (c *Client) Fetch(ctx context.Context, appid string) (*Instances, error) {
	if appid == "" {
		return nil, fmt.Errorf("%w: Fetch: empty appid", ErrInvalidInstance)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	ctx, unbind := c.bind(ctx)
	defer unbind()
	q := url.Values{"env": {c.cfg.Env}, "appid": {appid}, "status": {"1"}}
	var out *Instances
	err := c.call(ctx, "fetch", http.MethodGet, "/discovery/fetch", q, func(node string, env *envelope) error {
		if env.Code != 0 {
			return codeErr("fetch "+appid, node, env)
		}
		info, err := decodeInfo(appid, env.Data)
		if err != nil {
			return fmt.Errorf("fetch on %s: %w", node, err)
		}
		out = info
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
