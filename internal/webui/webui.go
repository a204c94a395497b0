// Package webui is the processor's web page: a live view of the job in the
// spirit of Flink's web UI, served at / on the processor's HTTP listener
// next to the JSON API it reads.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary (no
// CDN, no build step): it polls GET /api/v1/job and GET
// /api/v1/checkpoints (same origin) and draws the job graph, the
// checkpoint history and the sink's transactions as inline SVG. In
// job.mode distributed it shows what that mode's API offers: the
// instance, its partition groups and rebalances (the checkpoint history
// answers 501 there, and the page says so).
//
// The page only reads: it has no control that stops or savepoints the
// job. Its responses forbid framing and inline scripts (a
// Content-Security-Policy of 'self'), so the API guard's Host and
// cross-origin checks in front of it are the only access rules needed.
package webui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// Mount registers the page on mux: GET / (exactly) answers the page and
// GET /ui/ its assets. Other paths stay the mux's (the API's).
func Mount(mux *http.ServeMux) {
	h := Handler()
	mux.Handle("GET /{$}", h)
	mux.Handle("GET /ui/", h)
}

// Handler serves the page at / and its assets under /ui/; any other path
// answers 404.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		switch p := r.URL.Path; {
		case p == "/":
			http.ServeFileFS(w, r, sub, "index.html")
		case strings.HasPrefix(p, "/ui/") && !strings.HasSuffix(p, "/"):
			http.StripPrefix("/ui", files).ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}
