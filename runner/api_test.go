package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/logbuf"
)

// call sends one request to the API with the given headers ("Host" sets
// the Host header) and returns the status code, the answer's headers and
// its body.
func call(t *testing.T, method, url string, headers map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// savepointsTaken counts the savepoints in the job's checkpoint history.
func savepointsTaken(t *testing.T, addr string) int {
	t.Helper()
	var cb checkpointsBody
	getJSON(t, "http://"+addr+"/api/v1/checkpoints", &cb)
	n := 0
	for _, c := range cb.History {
		if c.Savepoint {
			n++
		}
	}
	return n
}

func jobState(t *testing.T, addr string) string {
	t.Helper()
	var jb jobBody
	getJSON(t, "http://"+addr+"/api/v1/job", &jb)
	return jb.State
}

// A page of another site cannot make a browser stop, cancel or savepoint
// the job: a POST that says it comes from another site (Sec-Fetch-Site),
// or whose Origin is not the API's own, is refused with 403 and does
// nothing. The same POST from the API's own origin, and a cross-site GET
// (a browser does not let the page read its answer), pass.
func TestAPIRefusesCrossSitePosts(t *testing.T) {
	m := newMemJob(100000, time.Millisecond)
	r := startRun(t, m, nil, "--config", jobConfig(t, t.TempDir(), ""))
	addr := r.addr()
	base := "http://" + addr
	waitCheckpoints(t, addr, 1)

	for _, tc := range []struct {
		name    string
		path    string
		headers map[string]string
	}{
		{"savepoint, both headers", "/api/v1/savepoint", map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}},
		{"stop, Sec-Fetch-Site only", "/api/v1/stop", map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"cancel, Sec-Fetch-Site same-site", "/api/v1/stop?savepoint=false", map[string]string{"Sec-Fetch-Site": "same-site"}},
		{"cancel, Origin only", "/api/v1/stop?savepoint=false", map[string]string{"Origin": "http://evil.example:8081"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := call(t, http.MethodPost, base+tc.path, tc.headers)
			if code != http.StatusForbidden {
				t.Fatalf("cross-site POST %s: %d %s, want 403", tc.path, code, body)
			}
			if !strings.Contains(body, "cross-origin") {
				t.Fatalf("the refusal %q does not say why", body)
			}
		})
	}
	if n := savepointsTaken(t, addr); n != 0 {
		t.Fatalf("%d savepoints taken by refused requests", n)
	}
	if st := jobState(t, addr); st != "RUNNING" {
		t.Fatalf("the job is %s after refused requests, want RUNNING", st)
	}
	if code, _, body := call(t, http.MethodGet, base+"/api/v1/job", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}); code != http.StatusOK {
		t.Fatalf("cross-site GET: %d %s", code, body)
	}
	code, _, body := call(t, http.MethodPost, base+"/api/v1/savepoint", map[string]string{"Origin": base, "Sec-Fetch-Site": "same-origin"})
	if code != http.StatusOK || !strings.Contains(body, "savepoint") {
		t.Fatalf("same-origin POST savepoint: %d %s, want 200", code, body)
	}
}

// A DNS rebinding page (a name of the attacker's pointed at 127.0.0.1)
// is same-origin with itself, so its requests carry its own name as the
// Host: any Host other than a loopback name, an IP address, the listen
// address or one of http.allowed_hosts is refused with 403, reads too.
func TestAPIRefusesUnknownHosts(t *testing.T) {
	m := newMemJob(100000, time.Millisecond)
	r := startRun(t, m, nil, "--config", jobConfig(t, t.TempDir(), ""))
	addr := r.addr()
	base := "http://" + addr
	port := addr[strings.LastIndex(addr, ":")+1:]
	waitCheckpoints(t, addr, 1)

	for _, method := range []string{http.MethodGet, http.MethodPost} {
		for _, path := range []string{"/api/v1/job", "/api/v1/savepoint", "/api/v1/stop?savepoint=false"} {
			if (method == http.MethodGet) != (path == "/api/v1/job") {
				continue
			}
			for _, host := range []string{"rebind.attacker.example:" + port, "rebind.attacker.example", "localhost.attacker.example:" + port} {
				code, _, body := call(t, method, base+path, map[string]string{"Host": host, "Sec-Fetch-Site": "same-origin"})
				if code != http.StatusForbidden || !strings.Contains(body, "http.allowed_hosts") {
					t.Fatalf("%s %s with Host %s: %d %s, want 403 naming http.allowed_hosts", method, path, host, code, body)
				}
			}
		}
	}
	if n := savepointsTaken(t, addr); n != 0 {
		t.Fatalf("%d savepoints taken by refused requests", n)
	}
	if st := jobState(t, addr); st != "RUNNING" {
		t.Fatalf("the job is %s after refused requests, want RUNNING", st)
	}
	for _, host := range []string{"localhost:" + port, "LOCALHOST.:" + port, "127.0.0.1:" + port, "[::1]:" + port, "10.1.2.3:" + port, "app.localhost:" + port} {
		if code, _, body := call(t, http.MethodGet, base+"/healthz", map[string]string{"Host": host}); code != http.StatusOK {
			t.Fatalf("GET /healthz with Host %s: %d %s, want 200", host, code, body)
		}
	}
}

// http.allowed_hosts adds names the API answers to.
func TestAPIAllowedHosts(t *testing.T) {
	m := newMemJob(100000, time.Millisecond)
	r := startRun(t, m, []string{"ONCEFLOW_HTTP_ALLOWED_HOSTS=processor,Onceflow.Internal"}, "--config", jobConfig(t, t.TempDir(), ""))
	addr := r.addr()
	base := "http://" + addr
	for _, host := range []string{"processor:8081", "onceflow.internal", "localhost"} {
		if code, _, body := call(t, http.MethodGet, base+"/healthz", map[string]string{"Host": host}); code != http.StatusOK {
			t.Fatalf("Host %s: %d %s, want 200", host, code, body)
		}
	}
	if code, _, _ := call(t, http.MethodGet, base+"/healthz", map[string]string{"Host": "processor.attacker.example"}); code != http.StatusForbidden {
		t.Fatalf("Host processor.attacker.example: %d, want 403", code)
	}
}

// With http.token set (here through ONCEFLOW_HTTP_TOKEN), every POST
// needs "Authorization: Bearer <token>": without it, or with another, it
// is refused with 401 and does nothing. The reads (health, metrics, job,
// checkpoints) need no token. The savepoint and stop commands send the
// token of --token or ONCEFLOW_HTTP_TOKEN. The token is never logged.
func TestAPITokenGuardsPosts(t *testing.T) {
	const token = "tok-3f9c2a17d6e04b58"
	m := newMemJob(100000, time.Millisecond)
	r := startRun(t, m, []string{"ONCEFLOW_HTTP_TOKEN=" + token}, "--config", jobConfig(t, t.TempDir(), ""))
	addr := r.addr()
	base := "http://" + addr
	waitCheckpoints(t, addr, 1)

	for _, path := range []string{"/healthz", "/metrics", "/api/v1/job", "/api/v1/checkpoints"} {
		if code, _, body := call(t, http.MethodGet, base+path, nil); code != http.StatusOK {
			t.Fatalf("GET %s without a token: %d %s, want 200", path, code, body)
		}
	}
	for _, auth := range []string{"", "Bearer wrong-token", "Bearer " + token + "x", "Basic " + token, token} {
		for _, path := range []string{"/api/v1/savepoint", "/api/v1/stop", "/api/v1/stop?savepoint=false"} {
			h := map[string]string{}
			if auth != "" {
				h["Authorization"] = auth
			}
			code, hdr, body := call(t, http.MethodPost, base+path, h)
			if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(body, "http.token") {
				t.Fatalf("POST %s with Authorization %q: %d (WWW-Authenticate %q) %s, want 401 naming http.token", path, auth, code, hdr.Get("WWW-Authenticate"), body)
			}
		}
	}
	if n := savepointsTaken(t, addr); n != 0 {
		t.Fatalf("%d savepoints taken by refused requests", n)
	}
	if st := jobState(t, addr); st != "RUNNING" {
		t.Fatalf("the job is %s after refused requests, want RUNNING", st)
	}
	code, _, body := call(t, http.MethodPost, base+"/api/v1/savepoint", map[string]string{"Authorization": "Bearer " + token})
	var sp savepointBody
	if code != http.StatusOK || json.Unmarshal([]byte(body), &sp) != nil || !dirHasMetadata(sp.Path) {
		t.Fatalf("POST savepoint with the token: %d %s", code, body)
	}

	// The commands: refused without the token, through with --token or
	// the environment.
	var out, errOut logbuf.Buffer
	if code := execute(context.Background(), newRoot(), []string{"savepoint", "--http", addr}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "401") || !strings.Contains(errOut.String(), "--token") {
		t.Fatalf("processor savepoint without a token: exit %d: %s, want 1 with 401 and a hint at --token", code, errOut.String())
	}
	out, errOut = logbuf.Buffer{}, logbuf.Buffer{}
	if code := execute(context.Background(), newRoot(), []string{"stop", "--savepoint=false", "--http", addr}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "401") {
		t.Fatalf("processor stop --savepoint=false without a token: exit %d: %s", code, errOut.String())
	}
	out, errOut = logbuf.Buffer{}, logbuf.Buffer{}
	if code := execute(context.Background(), newRoot(), []string{"savepoint", "--http", addr, "--token", token}, &out, &errOut); code != 0 || !dirHasMetadata(strings.TrimSpace(out.String())) {
		t.Fatalf("processor savepoint --token: exit %d: %s %s", code, out.String(), errOut.String())
	}
	out, errOut = logbuf.Buffer{}, logbuf.Buffer{}
	withEnv := newRootDeps(deps{env: []string{"ONCEFLOW_HTTP_TOKEN=" + token}})
	if code := execute(context.Background(), withEnv, []string{"savepoint", "--http", addr}, &out, &errOut); code != 0 || !dirHasMetadata(strings.TrimSpace(out.String())) {
		t.Fatalf("processor savepoint with ONCEFLOW_HTTP_TOKEN: exit %d: %s %s", code, out.String(), errOut.String())
	}
	if st := jobState(t, addr); st != "RUNNING" {
		t.Fatalf("the job is %s, want RUNNING", st)
	}
	out, errOut = logbuf.Buffer{}, logbuf.Buffer{}
	withEnv = newRootDeps(deps{env: []string{"ONCEFLOW_HTTP_TOKEN=" + token}})
	if code := execute(context.Background(), withEnv, []string{"stop", "--http", addr}, &out, &errOut); code != 0 {
		t.Fatalf("processor stop with ONCEFLOW_HTTP_TOKEN: exit %d: %s", code, errOut.String())
	}
	stopPath := strings.TrimSpace(out.String())
	if code := r.wait(20 * time.Second); code != 0 || strings.TrimSpace(r.stdout.String()) != stopPath {
		t.Fatalf("processor run: exit %d, stdout %q, want 0 and %q:\n%s", code, r.stdout.String(), stopPath, r.stderr.String())
	}
	if strings.Contains(r.stderr.String(), token) {
		t.Fatalf("the token is in the log:\n%s", r.stderr.String())
	}
}

// warnLines are the log lines at Warn that mention the token key.
func tokenWarnings(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, "http.token") {
			out = append(out, l)
		}
	}
	return out
}

// A listener beyond loopback without a token is warned about once, at
// Warn, at start; with a token, or on loopback, it is not.
func TestRunWarnsOfAnOpenListener(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen string
		env    []string
		warn   bool
	}{
		{"all interfaces without a token", "0.0.0.0:0", nil, true},
		{"all interfaces with a token", "0.0.0.0:0", []string{"ONCEFLOW_HTTP_TOKEN=tok-0123456789abcdef"}, false},
		{"loopback without a token", "127.0.0.1:0", nil, false},
		{"localhost without a token", "localhost:0", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemJob(100000, time.Millisecond)
			r := startRun(t, m, tc.env, "--config", jobConfig(t, t.TempDir(), ""), "--set", "http.listen="+tc.listen)
			r.addr()
			r.sigs <- syscall.SIGTERM
			if code := r.wait(20 * time.Second); code != 0 {
				t.Fatalf("exit %d:\n%s", code, r.stderr.String())
			}
			warns := tokenWarnings(r.stderr.String())
			switch {
			case tc.warn && len(warns) != 1:
				t.Fatalf("%d warnings naming http.token, want 1:\n%s", len(warns), r.stderr.String())
			case tc.warn && !strings.Contains(warns[0], "loopback"):
				t.Fatalf("the warning %q does not say the listener is beyond loopback", warns[0])
			case !tc.warn && len(warns) != 0:
				t.Fatalf("unexpected warning: %s", warns)
			}
		})
	}
}

// A refusal is logged at Warn, then at most once a minute per kind with
// the count since the last line: a page posting in a loop cannot flood
// the log. The listen address's host name is allowed like localhost.
func TestGuardLogsRefusalsOncePerMinute(t *testing.T) {
	var buf logbuf.Buffer
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	g := newAPIGuard(config.HTTP{Listen: "jobhost.internal:8081", Token: "t0ken"}, slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now })
	h := g.wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	serve := func(method, host string, hdr map[string]string) int {
		r := httptest.NewRequest(method, "http://"+host+"/api/v1/savepoint", nil)
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	lines := func(kind string) []string {
		var out []string
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, "reason="+kind) {
				out = append(out, l)
			}
		}
		return out
	}
	for range 5 {
		if code := serve(http.MethodPost, "evil.example", nil); code != http.StatusForbidden {
			t.Fatalf("bad host: %d", code)
		}
		if code := serve(http.MethodPost, "jobhost.internal:8081", nil); code != http.StatusUnauthorized {
			t.Fatalf("no token: %d", code)
		}
		now = now.Add(10 * time.Second)
	}
	if h, tk := lines("host"), lines("token"); len(h) != 1 || len(tk) != 1 || !strings.Contains(h[0], "refused_since_last_line=1") {
		t.Fatalf("after 5 refusals of each kind in 50s: %d host lines, %d token lines, want 1 each:\n%s", len(h), len(tk), buf.String())
	}
	now = now.Add(10 * time.Second) // a minute after the first
	serve(http.MethodPost, "evil.example", nil)
	if h := lines("host"); len(h) != 2 || !strings.Contains(h[1], "refused_since_last_line=5") {
		t.Fatalf("a minute later: %q, want a second line counting 5 refusals", h)
	}
	if code := serve(http.MethodPost, "JobHost.Internal.:8081", map[string]string{"Authorization": "bearer t0ken"}); code != http.StatusNoContent {
		t.Fatalf("the listen host with the token: %d", code)
	}
	if strings.Contains(buf.String(), "t0ken") {
		t.Fatalf("the token is in the log:\n%s", buf.String())
	}
}

// The API's connections are bounded: a request whose body never comes is
// dropped after the read timeout, an idle keep-alive connection after
// the idle timeout. (Timeouts are shortened for the test.)
func TestAPIConnectionsTimeOut(t *testing.T) {
	to := httpTimeouts{readHeader: 300 * time.Millisecond, read: 300 * time.Millisecond, idle: 300 * time.Millisecond, write: 300 * time.Millisecond}
	r := startRunDeps(t, func(d deps) deps { d.httpTimeouts = to; return d }, newMemJob(100000, time.Millisecond), nil,
		"--config", jobConfig(t, t.TempDir(), ""))
	addr := r.addr()

	// closedWithin says whether the server closes conn within d, after
	// reading whatever it answered.
	closedWithin := func(conn net.Conn, d time.Duration) (bool, string) {
		_ = conn.SetReadDeadline(time.Now().Add(d))
		b, err := io.ReadAll(conn)
		return err == nil, string(b) // nil: EOF, the server closed it
	}
	t.Run("body never sent", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\n", addr)
		if closed, got := closedWithin(conn, 5*time.Second); !closed {
			t.Fatalf("the connection is still open 5s after a request whose body never came (read %q)", got)
		}
	})
	t.Run("idle", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
		closed, got := closedWithin(conn, 5*time.Second)
		if !strings.HasPrefix(got, "HTTP/1.1 200") {
			t.Fatalf("answer %q", got)
		}
		if !closed {
			t.Fatal("an idle keep-alive connection is still open after 5s")
		}
	})
}

// A stop answers when its savepoint is complete, however long that takes
// within the stop timeout: no write timeout cuts its answer.
func TestAPIStopOutlastsTheWriteTimeout(t *testing.T) {
	to := httpTimeouts{readHeader: 200 * time.Millisecond, read: 200 * time.Millisecond, idle: 200 * time.Millisecond, write: 200 * time.Millisecond}
	m := newMemJob(100000, time.Millisecond)
	m.sink.block = make(chan struct{}) // no savepoint completes until it is closed
	r := startRunDeps(t, func(d deps) deps { d.httpTimeouts = to; return d }, m, nil,
		"--config", jobConfig(t, t.TempDir(), ""), "--stop-timeout", "1m")
	addr := r.addr()
	waitFor(t, func() bool { return jobState(t, addr) == "RUNNING" })
	type answer struct {
		code int
		body string
	}
	answered := make(chan answer, 1)
	posted := time.Now()
	go func() {
		resp, err := http.Post("http://"+addr+"/api/v1/stop", "", nil)
		if err != nil {
			answered <- answer{-1, err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answered <- answer{resp.StatusCode, string(b)}
	}()
	waitFor(t, func() bool { return strings.Contains(r.stderr.String(), "stopping the job with a savepoint") })
	// The savepoint completes well after every timeout of the server.
	time.Sleep(max(0, 5*to.write-time.Since(posted)))
	close(m.sink.block)
	a := <-answered
	var sp savepointBody
	if a.code != http.StatusOK || json.Unmarshal([]byte(a.body), &sp) != nil || !dirHasMetadata(sp.Path) {
		t.Fatalf("stop answered %d %q after %s, want 200 with the savepoint", a.code, a.body, time.Since(posted))
	}
	if code := r.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, r.stderr.String())
	}
}

// savepointDirsOf lists the savepoint directories of the memwc job under
// the checkpoint directory of jobConfig(t, dir, ...).
func savepointDirsOf(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "checkpoints", "memwc"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "savepoint-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// Repeated POST /api/v1/savepoint cannot fill the disk: by default
// (checkpoint.retain_savepoints 10) the job keeps its ten newest
// savepoints and removes older ones as each new one completes, before it
// answers. Every savepoint answered is whole, the one a stop answers is
// the job's newest restore point, and a plain run resumes from it.
// (Every savepoint stayed: twelve POSTs left twelve directories.)
func TestRepeatedSavepointsKeepTheBound(t *testing.T) {
	dir := t.TempDir()
	cfg := jobConfig(t, dir, "")
	m := newMemJob(100000, time.Millisecond)
	r := startRun(t, m, nil, "--config", cfg)
	addr := r.addr()
	base := "http://" + addr
	waitCheckpoints(t, addr, 1)
	for i := 1; i <= 12; i++ {
		code, _, body := call(t, http.MethodPost, base+"/api/v1/savepoint", nil)
		var sp savepointBody
		if code != http.StatusOK || json.Unmarshal([]byte(body), &sp) != nil {
			t.Fatalf("POST savepoint %d: %d %s", i, code, body)
		}
		if _, err := loadCheckpoint(context.Background(), sp.Path); err != nil {
			t.Fatalf("savepoint %d answered as %s: %v", i, sp.Path, err)
		}
		if on := savepointDirsOf(t, dir); len(on) > 10 {
			t.Fatalf("after %d savepoints %d are on disk, want at most 10: %v", i, len(on), on)
		}
	}
	if n := strings.Count(r.stderr.String(), "removed an old savepoint beyond the retained count"); n != 2 {
		t.Fatalf("%d removals logged, want 2:\n%s", n, r.stderr.String())
	}
	code, _, body := call(t, http.MethodPost, base+"/api/v1/stop", nil)
	var stop savepointBody
	if code != http.StatusOK || json.Unmarshal([]byte(body), &stop) != nil {
		t.Fatalf("POST stop: %d %s", code, body)
	}
	if code := r.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, r.stderr.String())
	}
	if on := savepointDirsOf(t, dir); len(on) != 10 || !slices.Contains(on, filepath.Base(stop.Path)) {
		t.Fatalf("after the stop: %v on disk, want 10 with %s", on, stop.Path)
	}
	var out, errOut logbuf.Buffer
	if code := execute(context.Background(), newRoot(), []string{"savepoints", "list", filepath.Join(dir, "checkpoints", "memwc")}, &out, &errOut); code != 0 {
		t.Fatalf("savepoints list: exit %d: %s", code, errOut.String())
	}
	var restoreLine string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "newest restore point") {
			restoreLine = l
		}
	}
	if !strings.Contains(restoreLine, stop.Path) {
		t.Fatalf("savepoints list does not name %s as the newest restore point:\n%s", stop.Path, out.String())
	}

	r2 := startRun(t, m, nil, "--config", cfg)
	waitCheckpoints(t, r2.addr(), 1)
	if !strings.Contains(r2.stderr.String(), "path="+stop.Path) {
		t.Fatalf("the next run did not resume from %s:\n%s", stop.Path, r2.stderr.String())
	}
}
