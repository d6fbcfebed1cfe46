package api

import (
	"net/http"
	"sync/atomic"
	"time"
)

// httpDate is the Date header's value, formatted once a second: formatting
// it was about 1 % of a lean write's node CPU (perf), and a wake-up of
// 10 000 parked polls formats the same second 10 000 times.
type httpDate struct {
	p atomic.Pointer[dateStamp]
}

type dateStamp struct {
	sec int64
	b   [len(http.TimeFormat)]byte
}

// append appends now's Date value (http.TimeFormat, UTC) to b.
func (d *httpDate) append(b []byte, now time.Time) []byte {
	sec := now.Unix()
	st := d.p.Load()
	if st == nil || st.sec != sec {
		st = &dateStamp{sec: sec}
		now.UTC().AppendFormat(st.b[:0], http.TimeFormat)
		d.p.Store(st) // a racing writer may store another second: every reader compares sec
	}
	return append(b, st.b[:]...)
}
