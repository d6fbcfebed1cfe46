package api

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
)

// bmspyMargin is subtracted from the client's x1-bmspy-timeout budget, like
// the original (spec 2.6), so the answer arrives before the client gives up.
const bmspyMargin = 20 * time.Millisecond

// holdFor returns how long a poll may be held: PollHold, or less when the
// client's x1-bmspy-timeout header (milliseconds) minus 20 ms is earlier. An
// unparsable or non-positive header is ignored.
func holdFor(pollHold time.Duration, header string) time.Duration {
	if header == "" {
		return pollHold
	}
	ms, err := strconv.ParseInt(header, 10, 64)
	if err != nil || ms <= 0 {
		return pollHold
	}
	// Clamp before multiplying so a huge value cannot overflow.
	if ms > int64((pollHold+bmspyMargin)/time.Millisecond) {
		return pollHold
	}
	return min(pollHold, time.Duration(ms)*time.Millisecond-bmspyMargin)
}

// poll: GET /discovery/poll (spec 4.8), one appid.
func (s *Server) poll(c echo.Context) error {
	v, err := s.form(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parsePoll(v, s.cfg.Limits, false)
	if err != nil {
		return replyBadRequest(c, err)
	}
	appid := p.Req.AppIDs[0]
	// An unknown appid answers at once (spec 4.8.1) where polls would hold.
	if !s.reg.Exists(p.Req.Env, appid, p.Req.Zone) {
		return replyPollNotFound(c, appid)
	}
	return s.longPoll(c, p.Req, pollAnswer) // poll answers only when the one appid changed
}

// polls: GET /discovery/polls (spec 4.9), the endpoint kratos uses.
func (s *Server) polls(c echo.Context) error {
	v, err := s.form(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parsePoll(v, s.cfg.Limits, true)
	if err != nil {
		return replyBadRequest(c, err)
	}
	return s.longPoll(c, p.Req, pollsBody)
}

// longPoll runs the hold loop (spec 5): Poll checks and arms a waiter
// atomically; a wake re-polls (Repoll), which may arm a new waiter because a
// wake may be for a change that leaves nothing to answer. The hold ends at the deadline
// (-304), at Shutdown (-304 at once) or when the client goes away (the
// waiter is released at once, nothing is written).
//
// A poll that has to wait on a plain keep-alive connection is handed to
// parkLean (lean.go), which frees net/http's resources for the hold.
func (s *Server) longPoll(c echo.Context, req registry.PollRequest, answer func(*registry.PollResult) [][]byte) error {
	ctx := c.Request().Context()
	hold := holdFor(s.cfg.PollHold, c.Request().Header.Get(headerBmTimeout))
	var timer *time.Timer
	parked := false
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if parked {
			s.parked.Add(-1)
		}
	}()
	res, w := s.reg.Poll(req)
	for {
		if res != nil {
			return s.writeJoined(c, wire.CodeOK, answer(res)...)
		}
		if !parked {
			if hold <= 0 || s.pollCtx.Err() != nil {
				w.Close()
				return reply(c, wire.CodeNotModified)
			}
			if s.parked.Add(1) > int64(s.maxPollers) {
				s.parked.Add(-1)
				w.Close()
				return reply(c, wire.CodeUnavailable)
			}
			if s.canLean(c) && s.parkLean(c, req, w, hold, answer) {
				return nil // the lean poll owns the waiter and the parked count now
			}
			parked = true
			timer = time.NewTimer(hold)
		}
		select {
		case <-w.C():
			// The appid that woke us is answered even if the client's
			// latest_timestamp is ahead of it (spec 5.3.2).
			res, w = s.reg.Repoll(req, w)
		case <-timer.C:
			w.Close()
			return reply(c, wire.CodeNotModified)
		case <-s.pollCtx.Done():
			w.Close()
			return reply(c, wire.CodeNotModified)
		case <-ctx.Done():
			w.Close()
			c.Set(ctxKeyCode, codeLabelCanceled)
			return nil
		}
	}
}
