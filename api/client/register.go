package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// registration is one instance this client keeps registered.
type registration struct {
	c      *Client
	key    string
	ins    Instance
	form   url.Values // register body
	ident  url.Values // renew / cancel body
	stop   context.CancelFunc
	done   chan struct{}
	once   sync.Once
	result error
}

// Register registers ins and keeps it registered: it renews every
// RenewInterval, registers again when a node answers -404 to a renew (the
// instance was evicted or the node lost it), and retries other nodes with
// backoff on node failures. Empty Region, Zone, Env and Hostname of ins are
// taken from the client's Config; Status 0 means StatusUp.
//
// The first register is retried across nodes until it succeeds, ctx ends,
// RetryTimeout passes, or the server rejects it (ErrRejected). On success
// Register returns cancel, which stops the heartbeat and sends one cancel
// (retried within RetryTimeout); calling it again returns the first result.
// Close cancels every registration still held.
func (c *Client) Register(ctx context.Context, ins Instance) (cancel func() error, err error) {
	r, err := c.newRegistration(ins)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if c.regs[r.key] != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrAlreadyRegistered, r.key)
	}
	c.regs[r.key] = r // reserved; Close skips it until the loop runs
	c.inflight.Add(1)
	c.mu.Unlock()
	defer c.inflight.Done()

	bctx, unbind := c.bind(ctx)
	err = c.register(bctx, r)
	unbind()
	c.mu.Lock()
	if err != nil || c.closed {
		delete(c.regs, r.key)
		closed := c.closed
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if closed { // registered while Close ran: take it back
			cctx, cc := context.WithTimeout(context.Background(), c.cfg.RequestTimeout)
			defer cc()
			_ = c.sendCancel(cctx, r)
		}
		return nil, ErrClosed
	}
	lctx, stop := context.WithCancel(c.ctx)
	r.stop = stop
	c.wg.Add(1)
	c.mu.Unlock()
	go r.renewLoop(lctx)
	return r.cancel, nil
}

func (c *Client) newRegistration(ins Instance) (*registration, error) {
	ins = ins.Clone()
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&ins.Region, c.cfg.Region)
	def(&ins.Zone, c.cfg.Zone)
	def(&ins.Env, c.cfg.Env)
	def(&ins.Hostname, c.cfg.Hostname)
	if ins.Status == 0 {
		ins.Status = StatusUp
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidInstance, fmt.Sprintf(format, a...))
	}
	if ins.AppID == "" {
		return nil, bad("AppID: must not be empty")
	}
	if ins.Status != StatusUp && ins.Status != StatusWaiting {
		return nil, bad("Status: must be 1 (up) or 2 (waiting), got %d", ins.Status)
	}
	n := 0
	for i, a := range ins.Addrs {
		if a == "" {
			continue
		}
		u, err := url.Parse(a)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, bad("Addrs[%d] %q: want scheme://host:port", i, a)
		}
		n++
	}
	if n == 0 {
		return nil, bad("Addrs: need at least one address")
	}
	meta := ""
	if len(ins.Metadata) > 0 {
		b, err := json.Marshal(ins.Metadata)
		if err != nil {
			return nil, bad("Metadata: %v", err)
		}
		meta = string(b)
	}
	ident := url.Values{
		"region": {ins.Region}, "zone": {ins.Zone}, "env": {ins.Env},
		"appid": {ins.AppID}, "hostname": {ins.Hostname},
	}
	form := url.Values{}
	for k, v := range ident {
		form[k] = v
	}
	for _, a := range ins.Addrs {
		if a != "" {
			form.Add("addrs", a)
		}
	}
	form.Set("version", ins.Version)
	form.Set("status", strconv.FormatUint(uint64(ins.Status), 10))
	form.Set("metadata", meta)
	return &registration{
		c: c, ins: ins, form: form, ident: ident, done: make(chan struct{}),
		key: ins.Env + "/" + ins.AppID + "/" + ins.Zone + "/" + ins.Hostname,
	}, nil
}

func (c *Client) register(ctx context.Context, r *registration) error {
	err := c.call(ctx, "register", http.MethodPost, "/discovery/register", r.form, func(node string, env *envelope) error {
		if env.Code != 0 {
			return codeErr("register", node, env)
		}
		return nil
	})
	if err != nil {
		c.metrics.registrations.WithLabelValues("error").Inc()
		return fmt.Errorf("register %s: %w", r.key, err)
	}
	c.metrics.registrations.WithLabelValues("ok").Inc()
	return nil
}

func (c *Client) sendCancel(ctx context.Context, r *registration) error {
	err := c.call(ctx, "cancel", http.MethodPost, "/discovery/cancel", r.ident, func(node string, env *envelope) error {
		if env.Code != 0 {
			return codeErr("cancel", node, env)
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil // already gone (evicted, or cancelled elsewhere): the goal is met
	}
	if err != nil {
		return fmt.Errorf("cancel %s: %w", r.key, err)
	}
	return nil
}

// renewLoop heartbeats until stopped. Each round, retries included, is
// bounded by one RenewInterval so rounds never pile up.
func (r *registration) renewLoop(ctx context.Context) {
	c := r.c
	defer c.wg.Done()
	defer close(r.done)
	t := time.NewTicker(c.cfg.RenewInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RenewInterval)
		err := c.call(rctx, "renew", http.MethodPost, "/discovery/renew", r.ident, func(node string, env *envelope) error {
			if env.Code != 0 {
				return codeErr("renew", node, env)
			}
			return nil
		})
		switch {
		case err == nil:
			c.metrics.renews.WithLabelValues("ok").Inc()
		case errors.Is(err, ErrNotFound):
			c.metrics.renews.WithLabelValues("not_found").Inc()
			c.log.Info("renew answered -404, registering again", "appid", r.ins.AppID, "hostname", r.ins.Hostname, "err", err)
			if err := c.register(rctx, r); err != nil && ctx.Err() == nil {
				c.log.Warn("re-register failed", "appid", r.ins.AppID, "hostname", r.ins.Hostname, "err", err)
			}
		case ctx.Err() == nil:
			c.metrics.renews.WithLabelValues("error").Inc()
			c.log.Warn("renew failed", "appid", r.ins.AppID, "hostname", r.ins.Hostname, "err", err)
		}
		cancel()
	}
}

// cancel stops the heartbeat (so no renew can race the cancel and trigger a
// re-register) and then cancels the registration on the server.
func (r *registration) cancel() error {
	r.once.Do(func() {
		c := r.c
		r.stop()
		<-r.done
		c.mu.Lock()
		delete(c.regs, r.key)
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RetryTimeout)
		defer cancel()
		r.result = c.sendCancel(ctx, r)
	})
	return r.result
}
