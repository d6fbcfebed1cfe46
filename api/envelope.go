package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/discovery-go/discovery/registry"
)

// Discovery error codes (spec 2.5). These are the only codes the server
// emits on protocol routes.
const (
	codeOK          = 0
	codeNotModified = -304
	codeBadRequest  = -400
	codeNotFound    = -404
	codeConflict    = -409
	codeUnavailable = -503
)

const (
	contentTypeJSON   = "application/json; charset=utf-8"
	headerKratosCode  = "Kratos-Status-Code"
	headerBmTimeout   = "X1-Bmspy-Timeout"
	ctxKeyCode        = "discovery.code"
	codeLabelCanceled = "canceled" // poll whose client went away: nothing written
)

// codeOf maps a registry error to a discovery code (the one table of
// error → ecode, style note 10). Anything unexpected is -503 so the client
// moves to another node.
func codeOf(err error) int {
	switch {
	case err == nil:
		return codeOK
	case errors.Is(err, registry.ErrInvalid):
		return codeBadRequest
	case errors.Is(err, registry.ErrNotFound):
		return codeNotFound
	case errors.Is(err, registry.ErrConflict):
		return codeConflict
	default:
		return codeUnavailable
	}
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// envelope builds the standard shape (spec 2.4): code, message, ttl and,
// when data is non-nil, the pre-encoded data. message "" means the decimal
// code.
func envelope(code int, message string, data []byte) []byte {
	if message == "" {
		message = strconv.Itoa(code)
	}
	b := make([]byte, 0, 48+len(message)+len(data))
	b = append(b, `{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, message)
	b = append(b, `,"ttl":1`...)
	if data != nil {
		b = append(b, `,"data":`...)
		b = append(b, data...)
	}
	return append(b, '}')
}

// writeBody sends an envelope body: always HTTP 200 (spec 2.4.1) with the
// Kratos-Status-Code header, and records the code for metrics and logs.
func writeBody(c echo.Context, code int, body []byte) error {
	c.Set(ctxKeyCode, code)
	c.Response().Header().Set(headerKratosCode, strconv.Itoa(code))
	return c.Blob(http.StatusOK, contentTypeJSON, body)
}

// reply sends the standard shape without data.
func reply(c echo.Context, code int) error {
	return writeBody(c, code, envelope(code, "", nil))
}

// replyData sends the standard shape with data (JSON null when v is a nil
// pointer/map/slice).
func (s *Server) replyData(c echo.Context, code int, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encode answer", "route", c.Path(), "err", err)
		return reply(c, codeUnavailable)
	}
	return writeBody(c, code, envelope(code, "", data))
}

// replyBadRequest sends -400 whose message names the parameter (spec 2.4).
func replyBadRequest(c echo.Context, err error) error {
	return writeBody(c, codeBadRequest, envelope(codeBadRequest, err.Error(), nil))
}

// replyPollNotFound is the map shape of a poll on an unknown appid (spec
// 4.8.1): no ttl, no data.
func replyPollNotFound(c echo.Context, appid string) error {
	b := make([]byte, 0, 48+len(appid))
	b = append(b, `{"code":-404,"message":`...)
	b = appendJSONString(b, appid+" not found")
	b = append(b, '}')
	return writeBody(c, codeNotFound, b)
}

// pollsBody builds the polls map shape (spec 4.9.2) by concatenating the
// registry's shared per-app payloads; nothing is re-encoded per poller.
// Appids repeated in the request appear once.
func pollsBody(res *registry.PollResult) []byte {
	n := 64
	for _, p := range res.Changed {
		n += len(p.AppID) + len(p.JSON) + 4
	}
	for _, m := range res.Missing {
		n += len(m) + 3
	}
	var buf bytes.Buffer
	buf.Grow(n)
	buf.WriteString(`{"code":0,"message":"0","data":{`)
	seen := make(map[string]struct{}, len(res.Changed))
	for _, p := range res.Changed {
		if _, dup := seen[p.AppID]; dup {
			continue
		}
		seen[p.AppID] = struct{}{}
		if len(seen) > 1 {
			buf.WriteByte(',')
		}
		buf.Write(appendJSONString(nil, p.AppID))
		buf.WriteByte(':')
		buf.Write(p.JSON)
	}
	buf.WriteString(`},"error":{"-404":[`)
	clear(seen)
	for _, m := range res.Missing {
		if _, dup := seen[m]; dup {
			continue
		}
		seen[m] = struct{}{}
		if len(seen) > 1 {
			buf.WriteByte(',')
		}
		buf.Write(appendJSONString(nil, m))
	}
	buf.WriteString(`]}}`)
	return buf.Bytes()
}
