package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Discovery codes (spec 2.5). Protocol answers carry them in the envelope's
// "code"; the HTTP status is 200 whatever the code (spec 2.4.1).
const (
	CodeOK          = 0
	CodeNotModified = -304 // poll held until its timeout without a change
	CodeBadRequest  = -400 // a parameter is missing or invalid; nothing changed
	// CodeUnauthorized and CodeForbidden answer admin routes (set, fetch/all,
	// the admin API) when the admin token is configured and the request
	// lacks it or carries a wrong one. Clients of the original never see
	// them: kratos sends no credentials and calls none of those routes.
	CodeUnauthorized = -401
	CodeForbidden    = -403
	CodeNotFound     = -404 // instance or app unknown; replicated renew: sender holds a newer copy
	CodeConflict     = -409 // replicated renew: sender holds an older copy; data is the receiver's
	CodeServerError  = -500 // the original's init-protect answer; peers: an op failed
	CodeUnavailable  = -503 // init-protect (spec 2.8.1), overload, internal failure
)

// KratosStatusHeader repeats the code of every protocol answer (spec 2.4).
const KratosStatusHeader = "Kratos-Status-Code"

// ContentTypeJSON is the Content-Type of every protocol answer.
const ContentTypeJSON = "application/json; charset=utf-8"

// Envelope is a protocol answer as clients read it (spec 2.4): the standard
// shape {code, message, ttl, data} or the map shape of polls {code,
// message, data, error}. Data and Error keep their raw JSON; each is nil
// when its key is absent (register, cancel and set answers have no data).
type Envelope struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	TTL     *int            `json:"ttl,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Error   json.RawMessage `json:"error,omitempty"`
}

// HasData reports whether the answer carries data other than null.
func (e *Envelope) HasData() bool { return len(e.Data) > 0 && string(e.Data) != "null" }

// DecodeData unmarshals Data into v.
func (e *Envelope) DecodeData(v any) error {
	if e.Data == nil {
		return errors.New("answer has no data")
	}
	return json.Unmarshal(e.Data, v)
}

// DecodeEnvelope parses one answer strictly: a single JSON object with an
// integer "code" (an answer without one is not a success) and a string
// "message" when present. Trailing data is an error.
func DecodeEnvelope(b []byte) (*Envelope, error) {
	var w struct {
		Code    *int            `json:"code"`
		Message string          `json:"message"`
		TTL     *int            `json:"ttl"`
		Data    json.RawMessage `json:"data"`
		Error   json.RawMessage `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("envelope: trailing data after the JSON object")
	}
	if w.Code == nil {
		return nil, errors.New(`envelope: no "code"`)
	}
	return &Envelope{Code: *w.Code, Message: w.Message, TTL: w.TTL, Data: w.Data, Error: w.Error}, nil
}

// AppendEnvelope appends the standard shape (spec 2.4): code, message (the
// decimal code when message is ""), ttl 1 and, when data is non-nil, data
// as given (already encoded JSON).
func AppendEnvelope(b []byte, code int, message string, data []byte) []byte {
	b = append(b, `{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	if message == "" {
		b = append(b, '"')
		b = strconv.AppendInt(b, int64(code), 10)
		b = append(b, '"')
	} else {
		b = AppendString(b, message)
	}
	b = append(b, `,"ttl":1`...)
	if data != nil {
		b = append(b, `,"data":`...)
		b = append(b, data...)
	}
	return append(b, '}')
}
