package webui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHandlerServesThePageAndItsAssets: / is the page, /ui/<file> its
// assets with their types, everything else (directories included) 404;
// every answer forbids framing and scripts from elsewhere.
func TestHandlerServesThePageAndItsAssets(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/job", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "api") })
	Mount(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, c := range []struct {
		path, wantType, wantBody string
		code                     int
	}{
		{"/", "text/html", `<script src="/ui/app.js">`, 200},
		{"/ui/app.js", "javascript", "/api/v1/checkpoints", 200},
		{"/ui/style.css", "text/css", ".node", 200},
		{"/api/v1/job", "", "api", 200},
		{"/ui/", "", "", 404},
		{"/ui/nope.js", "", "", 404},
		{"/index.html", "", "", 404},
		{"/elsewhere", "", "", 404},
	} {
		resp, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("GET %s: %d, want %d", c.path, resp.StatusCode, c.code)
			continue
		}
		if !strings.Contains(resp.Header.Get("Content-Type"), c.wantType) || !strings.Contains(string(body), c.wantBody) {
			t.Errorf("GET %s: %s with %.80q; want %s with %q", c.path, resp.Header.Get("Content-Type"), body, c.wantType, c.wantBody)
		}
		if c.code == 200 && c.path != "/api/v1/job" {
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("GET %s: Content-Security-Policy %q", c.path, csp)
			}
		}
	}
}
