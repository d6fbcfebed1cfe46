package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
)

const (
	contentTypeJSON   = wire.ContentTypeJSON
	headerKratosCode  = wire.KratosStatusHeader
	headerBmTimeout   = "X1-Bmspy-Timeout"
	ctxKeyCode        = "discovery.code"
	codeLabelCanceled = "canceled" // poll whose client went away: nothing written
	codeLabelLean     = "lean"     // poll handed to lean parking: counted when it ends
)

// codeOf maps a registry error to a discovery code (the one table of
// error → ecode, style note 10). Anything unexpected is -503 so the client
// moves to another node.
func codeOf(err error) int {
	switch {
	case err == nil:
		return wire.CodeOK
	case errors.Is(err, registry.ErrInvalid):
		return wire.CodeBadRequest
	case errors.Is(err, registry.ErrNotFound):
		return wire.CodeNotFound
	case errors.Is(err, registry.ErrConflict):
		return wire.CodeConflict
	default:
		return wire.CodeUnavailable
	}
}

// Constant framing and bodies, shared by every request (never modified).
var (
	// okDataPrefix frames a code-0 standard answer around a shared payload
	// (fetch, poll): okDataPrefix + payload + closeBrace.
	okDataPrefix = []byte(`{"code":0,"message":"0","ttl":1,"data":`)
	closeBrace   = []byte{'}'}
	// bodyNotFoundNullData is the -404 of fetch and renew (spec 4.6.1, 4.2).
	bodyNotFoundNullData = []byte(`{"code":-404,"message":"-404","ttl":1,"data":null}`)
)

// envelope builds the standard shape (spec 2.4): code, message ("" means
// the decimal code), ttl and, when data is non-nil, the pre-encoded data.
func envelope(code int, message string, data []byte) []byte {
	return wire.AppendEnvelope(make([]byte, 0, 48+len(message)+len(data)), code, message, data)
}

// fmtCode is the decimal text of a code (header value, metrics label).
func fmtCode(code int) string { return strconv.Itoa(code) }

// stdAnswer holds what every answer of one code shares: its
// Kratos-Status-Code header value and its standard shape without data.
// Built once; net/http and clients only read them.
type stdAnswer struct {
	code   int
	header []string
	body   []byte
}

var stdAnswers = func() []stdAnswer {
	codes := []int{wire.CodeOK, wire.CodeNotModified, wire.CodeBadRequest, wire.CodeNotFound, wire.CodeConflict, wire.CodeUnavailable}
	out := make([]stdAnswer, len(codes))
	for i, c := range codes {
		out[i] = stdAnswer{code: c, header: []string{fmtCode(c)}, body: envelope(c, "", nil)}
	}
	return out
}()

func stdAnswerOf(code int) *stdAnswer {
	for i := range stdAnswers {
		if stdAnswers[i].code == code {
			return &stdAnswers[i]
		}
	}
	return nil
}

// hdrContentTypeJSON is the shared Content-Type value of every answer.
var hdrContentTypeJSON = []string{contentTypeJSON}

// writeBody sends an envelope body: always HTTP 200 (spec 2.4.1) with the
// Kratos-Status-Code header, which is also what the metrics and access log
// read as the answer's code. The body is the concatenation of parts, written
// one after the other rather than joined, so answers pass the registry's
// shared payload bytes through without a per-request copy.
func writeBody(c echo.Context, code int, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	w := c.Response()
	h := w.Header()
	// Direct map writes with canonical keys: no per-answer value slices for
	// the constant headers.
	h[echo.HeaderContentType] = hdrContentTypeJSON
	h[echo.HeaderContentLength] = []string{strconv.Itoa(n)}
	if sa := stdAnswerOf(code); sa != nil {
		h[headerKratosCode] = sa.header
	} else {
		h[headerKratosCode] = []string{fmtCode(code)}
	}
	w.WriteHeader(http.StatusOK)
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// writeJoined is writeBody for answers made of shared payloads (fetch,
// fetchs, polls): above net/http's 2 KB response buffer every part larger
// than what is left of it is written to the socket on its own, a syscall
// each (10 for a fetchs of 10 apps × 10 instances). Joined in a pooled
// buffer the answer takes two (headers with its first 4 KB, then the rest);
// copying 40 KB costs a few µs, a loopback write several. Parts of 16 KB
// and more on average are cheaper written as they are: the copy then costs
// about what the writes it saves do.
func (s *Server) writeJoined(c echo.Context, code int, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if len(parts) < 2 || n <= 2<<10 || n > maxPooledAnswer || n/len(parts) >= 16<<10 {
		return writeBody(c, code, parts...)
	}
	bp := s.answerBuf()
	b := (*bp)[:0]
	for _, p := range parts {
		b = append(b, p...)
	}
	err := writeBody(c, code, b)
	s.putAnswerBuf(bp, b)
	return err
}

// maxPooledAnswer bounds the buffers kept for reuse: one rare huge answer
// must not pin its size in every pooled buffer.
const maxPooledAnswer = 256 << 10

func (s *Server) answerBuf() *[]byte {
	if bp, _ := s.answerBufs.Get().(*[]byte); bp != nil {
		return bp
	}
	return new([]byte)
}

func (s *Server) putAnswerBuf(bp *[]byte, b []byte) {
	if cap(b) <= maxPooledAnswer {
		*bp = b[:0]
		s.answerBufs.Put(bp)
	}
}

// reply sends the standard shape without data.
func reply(c echo.Context, code int) error {
	if sa := stdAnswerOf(code); sa != nil {
		return writeBody(c, code, sa.body)
	}
	return writeBody(c, code, envelope(code, "", nil))
}

// replyData sends the standard shape with data (JSON null when v is a nil
// pointer/map/slice).
func (s *Server) replyData(c echo.Context, code int, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encode answer", "route", c.Path(), "err", err)
		return reply(c, wire.CodeUnavailable)
	}
	return writeBody(c, code, envelope(code, "", data))
}

// instanceHead is the room left before one instance's JSON (renew): the
// registry appends the instance after it, and replyInstance writes the
// envelope's head, whose length depends on the code, right before it, so
// the answer is built in one buffer. It holds the head of any code.
const instanceHead = len(`{"code":-9223372036854775808,"message":"-9223372036854775808","ttl":1,"data":`)

// replyInstance sends the standard shape with one instance as data: its
// JSON is b[instanceHead:] (registry.RenewAppend).
func replyInstance(c echo.Context, code int, b []byte) error {
	var head [instanceHead]byte
	h := append(head[:0], `{"code":`...)
	h = strconv.AppendInt(h, int64(code), 10)
	h = append(h, `,"message":"`...)
	h = strconv.AppendInt(h, int64(code), 10)
	h = append(h, `","ttl":1,"data":`...)
	start := instanceHead - len(h)
	copy(b[start:], h)
	return writeBody(c, code, append(b[start:], '}'))
}

// replyBadRequest sends -400 whose message names the parameter (spec 2.4).
func replyBadRequest(c echo.Context, err error) error {
	return writeBody(c, wire.CodeBadRequest, envelope(wire.CodeBadRequest, err.Error(), nil))
}

// replyPollNotFound is the map shape of a poll on an unknown appid (spec
// 4.8.1): no ttl, no data.
func replyPollNotFound(c echo.Context, appid string) error {
	b := make([]byte, 0, 48+len(appid))
	b = append(b, `{"code":-404,"message":`...)
	b = wire.AppendString(b, appid+" not found")
	b = append(b, '}')
	return writeBody(c, wire.CodeNotFound, b)
}

// pollsBody builds the polls map shape (spec 4.9.2) for writeBody: the
// framing text, interleaved with the registry's shared per-app payloads as
// they are (nothing is copied or re-encoded per poller). The registry lists
// each appid once.
func pollsBody(res *registry.PollResult) [][]byte {
	n := 0
	for _, m := range res.Missing {
		n += len(m) + 3
	}
	parts := appMapBody(`{"code":0,"message":"0","data":{`, res.Changed, `},"error":{"-404":[`)
	last := make([]byte, 0, n+len(parts[len(parts)-1])+3)
	last = append(last, parts[len(parts)-1]...)
	for i, m := range res.Missing {
		if i > 0 {
			last = append(last, ',')
		}
		last = wire.AppendString(last, m)
	}
	parts[len(parts)-1] = append(last, `]}}`...)
	return parts
}

// appMapBody returns the parts of head + {"appid":payload,...} members +
// tail: framing text interleaved with the shared payloads, which are never
// copied. The framing is built in one buffer; the parts slice it.
func appMapBody(head string, apps []registry.AppPayload, tail string) [][]byte {
	n := len(head) + len(tail)
	for _, p := range apps {
		n += len(p.AppID) + 4
	}
	// frame never outgrows its capacity much; if it does, earlier parts keep
	// pointing at the old array, whose bytes do not change.
	frame := make([]byte, 0, n)
	parts := make([][]byte, 0, 2*len(apps)+1)
	frame = append(frame, head...)
	start := 0
	for i, p := range apps {
		if i > 0 {
			frame = append(frame, ',')
		}
		frame = wire.AppendString(frame, p.AppID)
		frame = append(frame, ':')
		parts = append(parts, frame[start:], p.JSON)
		start = len(frame)
	}
	frame = append(frame, tail...)
	return append(parts, frame[start:])
}
