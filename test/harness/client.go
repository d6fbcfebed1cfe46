package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/syncup"
)

// Client speaks the discovery protocol with raw net/http and urlencoded
// forms, the way kratos does (spec 2.2), and decodes answers into the wire
// package's types without importing any server package: these tests check
// the wire. Safe for
// concurrent use; Close releases its idle connections.
type Client struct {
	// Addr is host:port of the node.
	Addr string
	// Timeout bounds a call whose ctx has no deadline. Zero: 10 s.
	Timeout time.Duration
	// Sign, when set, signs every request as a peer would (see AsPeer).
	Sign func(req *http.Request, body []byte)
	tr   *http.Transport
	hc   *http.Client
}

// AsPeer returns a client sharing c's connections that signs every request
// with the cluster secret, as a node forwarding a write does: only then do
// peer-only parameters (replication, dirty_timestamp, ...) take effect.
func (c *Client) AsPeer(secret string) (*Client, error) {
	auth, err := syncup.NewPeerAuth(secret, nil, time.Minute)
	if err != nil {
		return nil, err
	}
	p := *c
	p.Sign = func(req *http.Request, body []byte) { auth.Sign(req, body) }
	return &p, nil
}

// NewClient returns a client of the node at addr (host:port).
func NewClient(addr string) *Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{Addr: addr, tr: tr, hc: &http.Client{Transport: tr}}
}

// Close drops idle keep-alive connections (and their goroutines).
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// Envelope is a decoded protocol answer (spec 2.4, the wire package's
// Envelope) with what the test saw on the HTTP level.
type Envelope struct {
	wire.Envelope

	HTTPStatus  int
	ContentType string
	Body        []byte
}

// HasData reports whether the answer carried a "data" key at all (null
// included).
func (e *Envelope) HasData() bool { return e.Data != nil }

// DecodeData unmarshals Data into v.
func (e *Envelope) DecodeData(v any) error {
	if e.Data == nil {
		return fmt.Errorf("answer has no data: %s", e.Body)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("decode data: %w (body %s)", err, e.Body)
	}
	return nil
}

// CodeError is returned by the typed helpers when the answer's code is not
// the one they expect.
type CodeError struct{ Env *Envelope }

func (e *CodeError) Error() string {
	return fmt.Sprintf("code %d: %s", e.Env.Code, e.Env.Body)
}

// Instance is the 14-key instance object of spec 3.1.
type Instance = wire.Instance

// InstanceInfo is the per-appid answer of fetch and polls (spec 3.4).
type InstanceInfo struct{ wire.InstanceInfo }

// All returns the instances of every zone.
func (ii *InstanceInfo) All() []Instance {
	var out []Instance
	for _, z := range ii.Instances {
		for _, in := range z {
			out = append(out, *in)
		}
	}
	return out
}

// NodeInfo is one entry of /discovery/nodes (spec 4.10).
type NodeInfo = wire.Node

func (c *Client) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	d := c.Timeout
	if d == 0 {
		d = 10 * time.Second
	}
	return context.WithTimeout(ctx, d)
}

// Do sends one request and decodes the envelope. POST parameters go in an
// urlencoded body, GET parameters in the query (spec 2.2). A transport error
// or an answer that is not a JSON envelope is an error.
func (c *Client) Do(ctx context.Context, method, path string, params url.Values, header http.Header) (*Envelope, error) {
	raw, status, ctype, err := c.Raw(ctx, method, path, params, header)
	if err != nil {
		return nil, err
	}
	env := &Envelope{HTTPStatus: status, ContentType: ctype, Body: raw}
	we, err := wire.DecodeEnvelope(raw)
	if err != nil {
		return env, fmt.Errorf("%s %s: HTTP %d, not a JSON envelope: %w: %q", method, path, status, err, raw)
	}
	env.Envelope = *we
	return env, nil
}

// Raw sends one request and returns the body, status and content type.
func (c *Client) Raw(ctx context.Context, method, path string, params url.Values, header http.Header) ([]byte, int, string, error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	u := "http://" + c.Addr + path
	var body io.Reader
	var raw []byte
	if method == http.MethodPost {
		raw = []byte(params.Encode())
		body = bytes.NewReader(raw)
	} else if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, 0, "", err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c.Sign != nil {
		c.Sign(req, raw)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, 0, "", err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, resp.StatusCode, "", err
	}
	return answer, resp.StatusCode, resp.Header.Get("Content-Type"), nil
}

// Form builds the register form of ins the way kratos does (spec 4.1):
// one addrs value per address, status 1 when zero, metadata as JSON text
// ("" when nil). extra values are added (e.g. replication=true).
func Form(ins Instance) url.Values {
	v := url.Values{}
	v.Set("region", ins.Region)
	v.Set("zone", ins.Zone)
	v.Set("env", ins.Env)
	v.Set("appid", ins.AppID)
	v.Set("hostname", ins.Hostname)
	for _, a := range ins.Addrs {
		v.Add("addrs", a)
	}
	v.Set("version", ins.Version)
	st := ins.Status
	if st == 0 {
		st = 1
	}
	v.Set("status", strconv.FormatUint(uint64(st), 10))
	md := ""
	if ins.Metadata != nil {
		b, _ := json.Marshal(ins.Metadata)
		md = string(b)
	}
	v.Set("metadata", md)
	return v
}

// keyForm holds the instance key fields kratos sends on renew and cancel.
func keyForm(ins Instance) url.Values {
	v := url.Values{}
	v.Set("region", ins.Region)
	v.Set("zone", ins.Zone)
	v.Set("env", ins.Env)
	v.Set("appid", ins.AppID)
	v.Set("hostname", ins.Hostname)
	return v
}

func merge(v url.Values, extra []url.Values) url.Values {
	for _, e := range extra {
		for k, vals := range e {
			v[k] = append(v[k], vals...)
		}
	}
	return v
}

// Register POSTs /discovery/register.
func (c *Client) Register(ctx context.Context, ins Instance, extra ...url.Values) (*Envelope, error) {
	return c.Do(ctx, http.MethodPost, "/discovery/register", merge(Form(ins), extra), nil)
}

// Renew POSTs /discovery/renew for the key of ins.
func (c *Client) Renew(ctx context.Context, ins Instance, extra ...url.Values) (*Envelope, error) {
	return c.Do(ctx, http.MethodPost, "/discovery/renew", merge(keyForm(ins), extra), nil)
}

// Cancel POSTs /discovery/cancel for the key of ins.
func (c *Client) Cancel(ctx context.Context, ins Instance, extra ...url.Values) (*Envelope, error) {
	return c.Do(ctx, http.MethodPost, "/discovery/cancel", merge(keyForm(ins), extra), nil)
}

// Set POSTs /discovery/set with the given form.
func (c *Client) Set(ctx context.Context, form url.Values) (*Envelope, error) {
	return c.Do(ctx, http.MethodPost, "/discovery/set", form, nil)
}

// Fetch GETs /discovery/fetch. status is the bit mask (0 means 3: all);
// zone may be empty. A code other than 0 is returned as *CodeError along
// with the envelope.
func (c *Client) Fetch(ctx context.Context, env, appid string, status int, zone string) (*InstanceInfo, *Envelope, error) {
	if status == 0 {
		status = 3
	}
	v := url.Values{"env": {env}, "appid": {appid}, "status": {strconv.Itoa(status)}}
	if zone != "" {
		v.Set("zone", zone)
	}
	e, err := c.Do(ctx, http.MethodGet, "/discovery/fetch", v, nil)
	if err != nil {
		return nil, e, err
	}
	if e.Code != 0 {
		return nil, e, &CodeError{e}
	}
	var ii InstanceInfo
	if err := e.DecodeData(&ii); err != nil {
		return nil, e, err
	}
	return &ii, e, nil
}

// FetchAll GETs /discovery/fetch/all: appid -> instances of every env/zone.
func (c *Client) FetchAll(ctx context.Context) (map[string][]Instance, *Envelope, error) {
	e, err := c.Do(ctx, http.MethodGet, "/discovery/fetch/all", nil, nil)
	if err != nil {
		return nil, e, err
	}
	if e.Code != 0 {
		return nil, e, &CodeError{e}
	}
	var out map[string][]Instance
	if err := e.DecodeData(&out); err != nil {
		return nil, e, err
	}
	return out, e, nil
}

// Nodes GETs /discovery/nodes.
func (c *Client) Nodes(ctx context.Context) ([]NodeInfo, *Envelope, error) {
	e, err := c.Do(ctx, http.MethodGet, "/discovery/nodes", nil, nil)
	if err != nil {
		return nil, e, err
	}
	if e.Code != 0 {
		return nil, e, &CodeError{e}
	}
	var out []NodeInfo
	if err := e.DecodeData(&out); err != nil {
		return nil, e, err
	}
	return out, e, nil
}

// PollsResult is a decoded polls answer (spec 4.9.2).
type PollsResult struct {
	Data    map[string]*InstanceInfo
	Missing []string // error."-404"
}

// Polls GETs /discovery/polls with one latest_timestamp per appid. It
// blocks as long as the server holds the request (bounded by ctx). A -304
// answer returns (nil, env, nil); other non-zero codes are *CodeError.
func (c *Client) Polls(ctx context.Context, env, hostname string, appids []string, ts []int64) (*PollsResult, *Envelope, error) {
	v := url.Values{"env": {env}, "hostname": {hostname}}
	for _, a := range appids {
		v.Add("appid", a)
	}
	for _, t := range ts {
		v.Add("latest_timestamp", strconv.FormatInt(t, 10))
	}
	e, err := c.Do(ctx, http.MethodGet, "/discovery/polls", v, nil)
	if err != nil {
		return nil, e, err
	}
	switch e.Code {
	case 0:
	case -304:
		return nil, e, nil
	default:
		return nil, e, &CodeError{e}
	}
	res := &PollsResult{}
	if err := e.DecodeData(&res.Data); err != nil {
		return nil, e, err
	}
	if len(e.Error) > 0 && string(e.Error) != "null" {
		var m map[string][]string
		if err := json.Unmarshal(e.Error, &m); err != nil {
			return nil, e, fmt.Errorf("decode error key: %w (body %s)", err, e.Body)
		}
		res.Missing = m["-404"]
	}
	return res, e, nil
}

// Ready reports whether /readyz answers 200.
func (c *Client) Ready(ctx context.Context) (bool, error) {
	_, status, _, err := c.Raw(ctx, http.MethodGet, "/readyz", nil, nil)
	return err == nil && status == http.StatusOK, err
}

// Metrics returns the /metrics exposition text.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	raw, status, _, err := c.Raw(ctx, http.MethodGet, "/metrics", nil, nil)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("/metrics: HTTP %d", status)
	}
	return string(raw), nil
}

// MetricSum returns the sum of every sample of the metric name (all label
// sets) in c's /metrics; 0 when the metric has no sample.
func (c *Client) MetricSum(ctx context.Context, name string) (float64, error) {
	text, err := c.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	var sum float64
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // another metric whose name starts with name
		}
		if rest[0] == '{' {
			_, rest, _ = strings.Cut(rest, "} ")
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return 0, fmt.Errorf("/metrics: %q: %w", strings.TrimSpace(line), err)
		}
		sum += v
	}
	return sum, nil
}
