package api

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/labstack/echo/v4"
)

// The admin web page: plain HTML, CSS and JavaScript embedded in the
// binary and served by every node at /ui/; it reads the admin API and
// acts through the public set and cancel (docs: README "Operate").
//
//go:embed ui
var uiFiles embed.FS

var uiTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
}

// ui serves /ui/<file>; /ui/ is index.html. Nothing else is fetched: the
// content security policy allows this node's own scripts and styles only.
func (s *Server) ui(c echo.Context) error {
	name := strings.TrimPrefix(c.Request().URL.Path, pathUI)
	if name == "" {
		name = "index.html"
	}
	ctype, ok := uiTypes[path.Ext(name)]
	if !ok || strings.Contains(name, "/") {
		return echo.NewHTTPError(http.StatusNotFound, "not found")
	}
	b, err := fs.ReadFile(uiFiles, "ui/"+name)
	if err != nil {
		return echo.NewHTTPError(http.StatusNotFound, "not found")
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, ctype)
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	return c.Blob(http.StatusOK, ctype, b)
}
