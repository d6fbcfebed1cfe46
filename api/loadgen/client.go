package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Discovery codes the bench needs to tell apart (spec 2.5).
const (
	codeOK          = 0
	codeNotModified = -304
)

// client sends discovery requests over one keep-alive transport. Safe for
// concurrent use.
type client struct {
	hc          *http.Client
	tr          *http.Transport
	timeout     time.Duration
	pollTimeout time.Duration
	bufs        sync.Pool
}

// newClient returns a client keeping up to idlePerHost idle connections per
// node, so that every worker (and every parked poll) keeps its own
// connection between requests instead of re-dialling.
func newClient(idlePerHost int, timeout, pollTimeout time.Duration) *client {
	tr := &http.Transport{
		// Never a proxy from the environment: traffic goes to the given
		// nodes only.
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   3 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:        0, // no global cap; the per-host cap rules
		MaxIdleConnsPerHost: idlePerHost,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	c := &client{
		hc:          &http.Client{Transport: tr},
		tr:          tr,
		timeout:     timeout,
		pollTimeout: pollTimeout,
	}
	c.bufs.New = func() any { return new(bytes.Buffer) }
	return c
}

// close drops idle connections (the transport has no goroutine left after
// that once all requests have returned).
func (c *client) close() { c.tr.CloseIdleConnections() }

// errCanceled marks an operation cut short by the run's context: it is
// neither a success nor a failure.
var errCanceled = errors.New("canceled")

// reply is one answered request.
type reply struct {
	code int    // discovery code
	body []byte // only when the caller asked to keep it
}

// opError classifies a failed request for the errors table.
type opError struct{ key string }

func (e *opError) Error() string { return e.key }

// errKey returns the errors-table key of err ("" for nil).
func errKey(err error) string {
	var oe *opError
	if errors.As(err, &oe) {
		return oe.key
	}
	if err == nil {
		return ""
	}
	return "transport"
}

// request describes one HTTP call.
type request struct {
	method string
	url    string
	body   string // urlencoded form for POST
	poll   bool   // long-poll: pollTimeout and x1-bmspy-timeout
	keep   bool   // keep the body in reply.body
	// wrote, if set, is called once the request has been written (or has
	// failed before that).
	wrote func()
}

// do sends r and returns the discovery code of the answer. A non-200 status,
// an unparsable body or a transport failure is an *opError; a cancelled
// parent ctx is errCanceled.
func (c *client) do(ctx context.Context, r request) (reply, error) {
	timeout := c.timeout
	if r.poll {
		timeout = c.pollTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if r.wrote != nil {
		var once sync.Once
		done := func() { once.Do(r.wrote) }
		defer done()
		rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { done() },
		})
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(rctx, r.method, r.url, body)
	if err != nil {
		return reply{}, &opError{"bad_request"}
	}
	if r.method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if r.poll {
		req.Header.Set("x1-bmspy-timeout", strconv.FormatInt(c.pollTimeout.Milliseconds(), 10))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{}, classify(ctx, err)
	}
	buf := c.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer c.bufs.Put(buf)
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return reply{}, classify(ctx, err)
	}
	if resp.StatusCode != http.StatusOK {
		return reply{}, &opError{"http_" + strconv.Itoa(resp.StatusCode)}
	}
	code, err := envelopeCode(buf.Bytes())
	if err != nil {
		return reply{}, &opError{"bad_body"}
	}
	rep := reply{code: code}
	if r.keep {
		rep.body = bytes.Clone(buf.Bytes())
	}
	return rep, nil
}

func classify(parent context.Context, err error) error {
	switch {
	case parent.Err() != nil:
		return errCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return &opError{"timeout"}
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return &opError{"timeout"}
		}
		return &opError{"transport"}
	}
}

// call is do for operations that must answer code 0: any other code is an
// *opError keyed by the code ("-404").
func (c *client) call(ctx context.Context, r request) (reply, error) {
	rep, err := c.do(ctx, r)
	if err == nil && rep.code != codeOK {
		return rep, &opError{strconv.Itoa(rep.code)}
	}
	return rep, err
}

// envelopeCode reads the top-level "code" of a discovery answer. Servers
// write it first (spec 2.4), so a large fetchs answer is not decoded as a
// whole; any other order still works.
func envelopeCode(body []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0, errors.New("not a JSON object")
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return 0, err
		}
		key, _ := t.(string)
		if key != "code" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return 0, err
			}
			continue
		}
		var v int
		if err := dec.Decode(&v); err != nil {
			return 0, err
		}
		return v, nil
	}
	return 0, errors.New("no code")
}

// latestOf returns data.<appid>.latest_timestamp of a polls answer or
// data.latest_timestamp of a fetch answer (appid "").
func latestOf(body []byte, appid string) (int64, error) {
	type info struct {
		Latest int64 `json:"latest_timestamp"`
	}
	if appid == "" {
		var env struct {
			Data *info `json:"data"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			return 0, err
		}
		if env.Data == nil || env.Data.Latest == 0 {
			return 0, errors.New("no latest_timestamp in answer")
		}
		return env.Data.Latest, nil
	}
	var env struct {
		Data map[string]info `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return 0, err
	}
	in, ok := env.Data[appid]
	if !ok || in.Latest == 0 {
		return 0, fmt.Errorf("no latest_timestamp for %s in answer", appid)
	}
	return in.Latest, nil
}

// metricValue returns the value of an unlabelled sample (or the sum of all
// samples whose labels contain match) of metric name in Prometheus text
// exposition. found is false when no sample matched.
func metricValue(text io.Reader, name, match string) (v float64, found bool, err error) {
	sc := bufio.NewScanner(text)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		switch {
		case strings.HasPrefix(rest, " "):
			if match != "" {
				continue
			}
		case strings.HasPrefix(rest, "{"):
			end := strings.LastIndexByte(rest, '}')
			if end < 0 || !strings.Contains(rest[:end], match) {
				continue
			}
			rest = rest[end+1:]
		default:
			continue // another metric with this prefix
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		f, perr := strconv.ParseFloat(fields[0], 64)
		if perr != nil {
			return 0, false, fmt.Errorf("metric %s: %w", name, perr)
		}
		v += f
		found = true
	}
	return v, found, sc.Err()
}

// metric scrapes node's /metrics and returns metricValue of name.
func (c *client) metric(ctx context.Context, node, name, match string) (float64, error) {
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+node+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, errCanceled
		}
		return 0, fmt.Errorf("scrape %s: %w", node, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return 0, fmt.Errorf("scrape %s: HTTP %d", node, resp.StatusCode)
	}
	v, found, err := metricValue(resp.Body, name, match)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", node, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body) // keep the connection reusable
	if !found {
		return 0, fmt.Errorf("scrape %s: no metric %s%s", node, name, match)
	}
	return v, nil
}

// Request builders. Parameters follow spec 2.2: POST in an urlencoded body,
// GET in the query string; lists are repeated names (2.3.1).

func (c *client) registerReq(node string, in instance, env, zone, region string) request {
	var b strings.Builder
	b.Grow(256)
	add := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(v))
	}
	add("region", region)
	add("zone", zone)
	add("env", env)
	add("hostname", in.hostname)
	add("appid", in.appid)
	for _, a := range in.addrs() {
		add("addrs", a)
	}
	add("version", "v1.0.0")
	add("status", "1")
	add("metadata", `{"weight":"10","color":"bench"}`)
	return request{method: http.MethodPost, url: "http://" + node + "/discovery/register", body: b.String()}
}

func keyForm(in instance, env, zone, region string) string {
	v := url.Values{}
	v.Set("region", region)
	v.Set("zone", zone)
	v.Set("env", env)
	v.Set("appid", in.appid)
	v.Set("hostname", in.hostname)
	return v.Encode()
}

func (c *client) renewReq(node string, in instance, env, zone, region string) request {
	return request{method: http.MethodPost, url: "http://" + node + "/discovery/renew", body: keyForm(in, env, zone, region)}
}

func (c *client) cancelReq(node string, in instance, env, zone, region string) request {
	return request{method: http.MethodPost, url: "http://" + node + "/discovery/cancel", body: keyForm(in, env, zone, region)}
}

// fetchsQuery returns the query string of a fetchs of appids (status 1).
func fetchsQuery(appids []string, env string) string {
	v := url.Values{}
	v["appid"] = appids
	v.Set("env", env)
	v.Set("status", "1")
	return v.Encode()
}

func fetchReq(node, appid, env string) request {
	v := url.Values{}
	v.Set("appid", appid)
	v.Set("env", env)
	v.Set("status", "1")
	return request{method: http.MethodGet, url: "http://" + node + "/discovery/fetch?" + v.Encode(), keep: true}
}

func pollsReq(node, appid, env, hostname string, latest int64) request {
	v := url.Values{}
	v.Set("appid", appid)
	v.Set("latest_timestamp", strconv.FormatInt(latest, 10))
	v.Set("env", env)
	v.Set("hostname", hostname)
	return request{method: http.MethodGet, url: "http://" + node + "/discovery/polls?" + v.Encode(), poll: true}
}

// instance is one generated instance.
type instance struct {
	idx      int
	appid    string
	hostname string
}

// addrs derives two endpoint URLs (grpc and http, like a kratos service)
// from the instance index: distinct per instance, never dialled.
func (in instance) addrs() [2]string {
	ip := fmt.Sprintf("10.%d.%d.%d", (in.idx>>16)&0xff, (in.idx>>8)&0xff, in.idx&0xff)
	return [2]string{"grpc://" + ip + ":9000", "http://" + ip + ":8000"}
}
