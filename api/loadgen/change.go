package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"time"
)

// The change of a notify round can be sent by a child process: the load
// tool's own process is flooded by the answers of every parked poll at the
// same moment, so its view of the writer's acknowledgement measures its
// own scheduling as much as the node (thousands of goroutines made
// runnable at once). A child with nothing else to do measures only the
// node's answer.

// changeArg is the hidden scenario the child runs.
const changeArg = "__change"

// changeResult is what the child prints: when it sent the request and
// when the answer was in, as Unix nanoseconds (one machine: one clock).
type changeResult struct {
	Sent  int64  `json:"sent"`
	Acked int64  `json:"acked"`
	Code  int    `json:"code"`
	Error string `json:"error,omitempty"`
}

// runChangeChild is `discovery bench __change URL BODY`: one POST, timed.
func runChangeChild(ctx context.Context, args []string, stdout io.Writer) int {
	if len(args) != 2 {
		return ExitUsage
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	// Warm the connection up first: the timed request is the write only.
	if req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.Replace(args[0], "/discovery/register", "/healthz", 1), nil); err == nil {
		if resp, err := hc.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}
	var res changeResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, args[0], strings.NewReader(args[1]))
	if err == nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		res.Sent = time.Now().UnixNano()
		var resp *http.Response
		resp, err = hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			res.Acked = time.Now().UnixNano()
			res.Code, err = envelopeCode(b)
		}
	}
	if err != nil {
		res.Error = err.Error()
	}
	_ = json.NewEncoder(stdout).Encode(res)
	if err != nil || res.Code != codeOK {
		return ExitFailure
	}
	return ExitOK
}

// changeByChild runs the change in a child process of exe (the discovery
// binary) and returns when it was sent and acknowledged.
func changeByChild(ctx context.Context, exe string, r request) (sent, acked time.Time, err error) {
	cmd := exec.CommandContext(ctx, exe, "bench", changeArg, r.url, r.body)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	runErr := cmd.Run()
	var res changeResult
	if jerr := json.Unmarshal(out.Bytes(), &res); jerr != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("change child: %w (exit: %v) %s", jerr, runErr, errb.Bytes()) //nolint:errorlint // the decode error is the one wrapped
	}
	if res.Error != "" || res.Code != codeOK {
		return time.Time{}, time.Time{}, &opError{fmt.Sprintf("change %d %s", res.Code, res.Error)}
	}
	if runErr != nil {
		return time.Time{}, time.Time{}, errors.Join(errors.New("change child failed"), runErr)
	}
	return time.Unix(0, res.Sent), time.Unix(0, res.Acked), nil
}
