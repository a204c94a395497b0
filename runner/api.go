package runner

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/internal/webui"
)

// apiServer serves health, metrics and the job API of one running job.
type apiServer struct {
	o   *observer
	ctl *control
	reg *prometheus.Registry
	log *slog.Logger
	// guard decides who may use the API; nil is the guard of an
	// http section without token or allowed hosts (never no guard).
	guard *apiGuard
	// writeTimeout is the write deadline of a read's answer, and what a
	// POST's gets beyond the stop timeout (see httpTimeouts); 0 for none.
	writeTimeout time.Duration
}

// handler is the API behind its guard (see apiGuard).
func (s *apiServer) handler() http.Handler {
	guard := s.guard
	if guard == nil {
		guard = newAPIGuard(config.HTTP{}, s.log, nil)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError)}))
	mux.HandleFunc("GET /api/v1/job", s.jobStatus)
	mux.HandleFunc("GET /api/v1/checkpoints", s.checkpoints)
	mux.HandleFunc("POST /api/v1/savepoint", s.savepoint)
	mux.HandleFunc("POST /api/v1/stop", s.stop)
	webui.Mount(mux) // GET /: the web page over this API
	return guard.wrap(s.withWriteDeadline(mux))
}

// withWriteDeadline gives each request its write deadline (see
// httpTimeouts).
func (s *apiServer) withWriteDeadline(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := s.writeTimeout; d > 0 {
			if r.Method == http.MethodPost && s.ctl != nil {
				d += s.ctl.stopTimeout
			}
			// A writer without deadlines (a test's recorder) has none.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
		}
		h.ServeHTTP(w, r)
	})
}

// apiGuard decides who may use the job API. The POSTs stop, cancel and
// savepoint the job, and the API listens on 127.0.0.1 by default, which a
// web page in a browser on the same machine can reach. Three checks, in
// this order, each answering a refusal itself:
//
//   - The Host header, on every request, against DNS rebinding: a page of
//     the attacker's domain, re-resolved to 127.0.0.1, is same-origin with
//     the API as far as the browser knows, may POST and read the answers,
//     but its requests name the attacker's domain as Host. Allowed are IP
//     addresses (a rebinding page never has one as its origin), localhost
//     and its subdomains (resolved to loopback by the client itself), the
//     host of http.listen, and http.allowed_hosts ("*": any). Else 403.
//   - Cross-site POSTs, through net/http's CrossOriginProtection: a request
//     whose Sec-Fetch-Site is not same-origin or none, or whose Origin does
//     not match its Host, came from a page of another site (CSRF). 403.
//     Requests without either header (curl, the processor's commands,
//     scripts) pass: they are not a browser's.
//   - With http.token set, every POST needs "Authorization: Bearer
//     <token>", compared in constant time. 401. The reads (health, metrics,
//     job status, checkpoint history) need none: they change nothing, and
//     scrapers and probes rarely carry a token; the first two checks still
//     keep them from pages of other sites.
//
// A refusal is logged at Warn, at most once a minute per kind, with how
// many were refused since the last line, so that a page posting in a loop
// cannot flood the log.
type apiGuard struct {
	token   []byte
	hosts   []string // lower case, besides IP addresses and localhost
	anyHost bool
	cop     *http.CrossOriginProtection
	log     *slog.Logger
	now     func() time.Time

	mu      sync.Mutex
	refused map[string]*refusals // by kind: host, cross-origin, token
}

// refusals counts refused requests of one kind between log lines.
type refusals struct {
	logged time.Time
	since  int
}

// refusalLogEvery is how often a kind of refusal is logged at most.
const refusalLogEvery = time.Minute

// newAPIGuard guards an API configured by c; now is the clock of the
// refusal log (time.Now when nil).
func newAPIGuard(c config.HTTP, log *slog.Logger, now func() time.Time) *apiGuard {
	if now == nil {
		now = time.Now
	}
	g := &apiGuard{token: []byte(c.Token), cop: http.NewCrossOriginProtection(), log: log, now: now, refused: map[string]*refusals{}}
	names := slices.Clone(c.AllowedHosts)
	if host, _, err := net.SplitHostPort(c.Listen); err == nil {
		names = append(names, host)
	}
	for _, h := range names {
		switch h = canonicalHost(h); h {
		case "*":
			g.anyHost = true
		case "":
		default:
			g.hosts = append(g.hosts, h)
		}
	}
	return g
}

// canonicalHost is the host of a Host header or name: without port and
// brackets, lower case, without a trailing dot.
func canonicalHost(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// hostAllowed says whether a request naming Host hostport may be served.
func (g *apiGuard) hostAllowed(hostport string) bool {
	host := canonicalHost(hostport)
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	// An empty Host is an HTTP/1.0 client's, never a browser's.
	return host == "" || host == "localhost" || strings.HasSuffix(host, ".localhost") || g.anyHost || slices.Contains(g.hosts, host)
}

// tokenOK says whether r carries the configured bearer token (or none is
// configured).
func (g *apiGuard) tokenOK(r *http.Request) bool {
	if len(g.token) == 0 {
		return true
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), g.token) == 1
}

func (g *apiGuard) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r.Host) {
			g.refuse(w, r, "host", http.StatusForbidden, fmt.Sprintf(
				"Host %q is not allowed: this API answers to IP addresses, localhost and http.listen's host; add the name to http.allowed_hosts", r.Host))
			return
		}
		if err := g.cop.Check(r); err != nil {
			g.refuse(w, r, "cross-origin", http.StatusForbidden, "cross-origin request refused: "+err.Error())
			return
		}
		safe := r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions
		if !safe && !g.tokenOK(r) {
			challenge := `Bearer realm="onceflow"`
			if r.Header.Get("Authorization") != "" {
				challenge += `, error="invalid_token"`
			}
			w.Header().Set("WWW-Authenticate", challenge)
			g.refuse(w, r, "token", http.StatusUnauthorized,
				"missing or wrong bearer token: this job's http.token is set; send \"Authorization: Bearer <token>\" (processor --token or ONCEFLOW_HTTP_TOKEN)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// refuse answers code with msg and logs the refusal (see apiGuard).
func (g *apiGuard) refuse(w http.ResponseWriter, r *http.Request, kind string, code int, msg string) {
	writeJSON(w, code, errorBody{msg})
	now := g.now()
	g.mu.Lock()
	c := g.refused[kind]
	if c == nil {
		c = &refusals{}
		g.refused[kind] = c
	}
	c.since++
	n := c.since
	due := c.logged.IsZero() || now.Sub(c.logged) >= refusalLogEvery
	if due {
		c.logged, c.since = now, 0
	}
	g.mu.Unlock()
	if due {
		g.log.Warn("http: request refused", "reason", kind, "status", code, "method", r.Method, "path", r.URL.Path,
			"host", r.Host, "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr, "refused_since_last_line", n)
	}
}

// httpTimeouts bound the API's connections, so that clients that send
// slowly, never finish a request or keep idle connections cannot hold
// the server's connections and goroutines. The server has no WriteTimeout:
// a stop or a savepoint answers only once its savepoint is complete, up
// to the stop timeout, and a server-wide write timeout would cut that
// answer (the client would see the connection close while the job
// stops). Each request gets its own write deadline instead: write for
// the reads, the stop timeout plus write for the POSTs.
type httpTimeouts struct {
	// readHeader is http.Server.ReadHeaderTimeout, read its ReadTimeout
	// (the whole request, body included), idle its IdleTimeout (between
	// requests of a keep-alive connection).
	readHeader, read, idle, write time.Duration
}

// defaultHTTPTimeouts are the API's timeouts.
func defaultHTTPTimeouts() httpTimeouts {
	return httpTimeouts{readHeader: 10 * time.Second, read: 30 * time.Second, idle: 2 * time.Minute, write: 30 * time.Second}
}

// orDefaults is t, or the defaults when t is zero.
func (t httpTimeouts) orDefaults() httpTimeouts {
	if t == (httpTimeouts{}) {
		return defaultHTTPTimeouts()
	}
	return t
}

// newHTTPServer serves h with the timeouts t.
func newHTTPServer(h http.Handler, t httpTimeouts, log *slog.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: t.readHeader, ReadTimeout: t.read, IdleTimeout: t.idle,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}

// healthy are the states in which the job is, or will shortly be, doing
// its work.
func healthy(state string) bool {
	return slices.Contains([]string{"CREATED", "RUNNING", "RESTARTING"}, state)
}

// healthBody answers /healthz. A job waiting for its Kafka cluster is
// healthy (200): it is alive and rides the outage out, up to
// kafka.outage_tolerance, after which its attempt fails and the restart
// strategy decides (RESTARTING is healthy, FAILED is not). The body says
// it waits, and for how long.
type healthBody struct {
	Job               string      `json:"job"`
	State             string      `json:"state"`
	Restarts          int64       `json:"restarts"`
	LastCheckpoint    int64       `json:"last_checkpoint"`
	WaitingForCluster bool        `json:"waiting_for_cluster"`
	Cluster           clusterBody `json:"cluster"`
}

// clusterBody is the Kafka cluster as the job sees it: reachable, or away
// since a time, for so long, with the call that first failed and the
// latest error.
type clusterBody struct {
	Reachable          bool       `json:"reachable"`
	UnreachableSeconds float64    `json:"unreachable_seconds"`
	Since              *time.Time `json:"since,omitempty"`
	FirstFailed        string     `json:"first_failed,omitempty"`
	LastError          string     `json:"last_error,omitempty"`
	// ToleranceSeconds is kafka.outage_tolerance: how long an outage is
	// waited for before the attempt fails.
	ToleranceSeconds float64 `json:"tolerance_seconds"`
	// Outages counts the outages the process has seen, the ongoing one
	// included.
	Outages int64 `json:"outages"`
}

func toClusterBody(st outage.Status) clusterBody {
	b := clusterBody{Reachable: !st.Down, ToleranceSeconds: st.Tolerance.Seconds(), Outages: st.Outages}
	if st.Down {
		since := st.Since
		b.Since, b.UnreachableSeconds, b.FirstFailed, b.LastError = &since, st.For.Seconds(), st.What, st.LastError
	}
	return b
}

func (s *apiServer) healthz(w http.ResponseWriter, _ *http.Request) {
	st := s.o.job.Status()
	state := displayState(st.State)
	code := http.StatusOK
	if !healthy(state) {
		code = http.StatusServiceUnavailable
	}
	cluster := s.o.cluster()
	writeJSON(w, code, healthBody{Job: st.Name, State: state, Restarts: st.Restarts, LastCheckpoint: st.LastCheckpoint,
		WaitingForCluster: cluster.Down, Cluster: toClusterBody(cluster)})
}

type jobBody struct {
	Name     string `json:"name"`
	Mode     string `json:"mode"` // single
	State    string `json:"state"`
	Restarts int64  `json:"restarts"`
	// LastFailure is the newest failed attempt's error (null: none).
	LastFailure    *failureBody   `json:"last_failure"`
	LastCheckpoint int64          `json:"last_checkpoint"`
	Operators      []operatorBody `json:"operators"`
	Source         sourceBody     `json:"source"`
	Sink           sinkBody       `json:"sink"`
	Cluster        clusterBody    `json:"cluster"`
}

type failureBody struct {
	Error string    `json:"error"`
	Time  time.Time `json:"time"`
}

// operatorBody is one operator of the running attempt (the list is empty
// between attempts); its counters start from zero at each restart.
type operatorBody struct {
	UID string `json:"uid"`
	// Kind: source, operator or sink; Inputs the uids feeding it.
	Kind        string   `json:"kind"`
	Parallelism int      `json:"parallelism"`
	Inputs      []string `json:"inputs"`
	RecordsIn   int64    `json:"records_in"`
	RecordsOut  int64    `json:"records_out"`
	// BackpressuredSeconds is the time the subtasks waited on full
	// channels downstream, summed over subtasks.
	BackpressuredSeconds float64 `json:"backpressured_seconds"`
	// The rest is over the last window of about a second (absent before
	// the first): records a second, the share of the window the subtasks
	// waited downstream (0 to 1; backpressured from 0.5, Flink's high),
	// and idle when no record came in or went out and not backpressured.
	RecordsInPerSecond  *float64 `json:"records_in_per_second,omitempty"`
	RecordsOutPerSecond *float64 `json:"records_out_per_second,omitempty"`
	BackpressureRatio   *float64 `json:"backpressure_ratio,omitempty"`
	Backpressured       bool     `json:"backpressured"`
	Idle                bool     `json:"idle"`
}

type sourceBody struct {
	RecordsRead   int64 `json:"records_read"`
	DecodeSkipped int64 `json:"decode_skipped"`
	DeadLettered  int64 `json:"dead_lettered"`
	OffsetResets  int64 `json:"offset_resets"`
	// ConsumerLag is null when unknown.
	ConsumerLag *int64 `json:"consumer_lag"`
}

type sinkBody struct {
	PendingTransactions  int     `json:"pending_transactions"`
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
}

func (s *apiServer) jobStatus(w http.ResponseWriter, _ *http.Request) {
	v := s.o.read()
	st, stats := v.status, v.stats
	body := jobBody{Name: st.Name, Mode: "single", State: displayState(st.State), Restarts: st.Restarts, LastCheckpoint: st.LastCheckpoint,
		Operators: []operatorBody{},
		Source:    sourceBody{RecordsRead: stats.RecordsRead, DecodeSkipped: stats.DecodeSkipped, DeadLettered: stats.DeadLettered, OffsetResets: stats.OffsetResets},
		Sink:      sinkBody{PendingTransactions: stats.PendingTransactions, OldestPendingSeconds: stats.OldestPending.Seconds()},
		Cluster:   toClusterBody(stats.Cluster),
	}
	if stats.ConsumerLag >= 0 {
		lag := stats.ConsumerLag
		body.Source.ConsumerLag = &lag
	}
	if st.LastFailure != "" {
		body.LastFailure = &failureBody{Error: st.LastFailure, Time: st.LastFailureTime}
	}
	for _, op := range st.Operators {
		ob := operatorBody{UID: op.UID, Kind: op.Kind, Parallelism: op.Parallelism, Inputs: append([]string{}, op.Inputs...),
			RecordsIn: op.RecordsIn, RecordsOut: op.RecordsOut, BackpressuredSeconds: op.Backpressured.Seconds()}
		if r, ok := v.rates[op.UID]; ok {
			ob.RecordsInPerSecond, ob.RecordsOutPerSecond, ob.BackpressureRatio = &r.InPerSecond, &r.OutPerSecond, &r.Backpressure
			ob.Backpressured, ob.Idle = r.Backpressured, r.Idle
		}
		body.Operators = append(body.Operators, ob)
	}
	writeJSON(w, http.StatusOK, body)
}

// checkpointBody is one checkpoint, like a line of Flink's checkpoint
// statistics.
type checkpointBody struct {
	ID          int64     `json:"id"`
	Savepoint   bool      `json:"savepoint"`
	Status      string    `json:"status"`
	TriggerTime time.Time `json:"trigger_time"`
	// DurationMS is trigger to completion, or so far while in progress.
	DurationMS  int64 `json:"duration_ms"`
	StateSize   int64 `json:"state_size"`
	AlignmentMS int64 `json:"alignment_ms"`
	// SyncMS and AsyncMS are the longest synchronous and asynchronous
	// snapshot parts of any subtask; LastAck ("uid/index") acknowledged
	// last, LastAckMS after the trigger; PersistMS wrote the metadata.
	SyncMS    float64 `json:"sync_ms,omitempty"`
	AsyncMS   float64 `json:"async_ms,omitempty"`
	LastAck   string  `json:"last_ack,omitempty"`
	LastAckMS float64 `json:"last_ack_ms,omitempty"`
	PersistMS float64 `json:"persist_ms,omitempty"`
	Path      string  `json:"path,omitempty"`
	Failure   string  `json:"failure,omitempty"`
}

type checkpointsBody struct {
	Counts checkpointCounts `json:"counts"`
	Latest struct {
		Completed *checkpointBody `json:"completed"`
		Savepoint *checkpointBody `json:"savepoint"`
		Failed    *checkpointBody `json:"failed"`
	} `json:"latest"`
	// History is the newest first.
	History []checkpointBody `json:"history"`
}

func toCheckpointBody(cs engine.CheckpointStats, now time.Time) checkpointBody {
	d := cs.Duration
	if cs.Status == engine.CheckpointInProgress {
		d = now.Sub(cs.Triggered)
	}
	return checkpointBody{ID: cs.ID, Savepoint: cs.Savepoint, Status: cs.Status.String(), TriggerTime: cs.Triggered,
		DurationMS: d.Milliseconds(), StateSize: cs.Size, AlignmentMS: cs.Alignment.Milliseconds(), Path: cs.Path, Failure: cs.Failure,
		SyncMS: ms(cs.SyncMax), AsyncMS: ms(cs.AsyncMax), LastAck: cs.LastAck, LastAckMS: ms(cs.LastAckAfter), PersistMS: ms(cs.Persist)}
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (s *apiServer) checkpoints(w http.ResponseWriter, _ *http.Request) {
	v := s.o.read()
	now := time.Now()
	body := checkpointsBody{Counts: v.counts, History: []checkpointBody{}}
	hist := v.status.Checkpoints
	for i := len(hist) - 1; i >= 0; i-- {
		cb := toCheckpointBody(hist[i], now)
		body.History = append(body.History, cb)
		switch {
		case cb.Status == "COMPLETED" && cb.Savepoint && body.Latest.Savepoint == nil:
			body.Latest.Savepoint = &cb
		case cb.Status == "FAILED" && body.Latest.Failed == nil:
			body.Latest.Failed = &cb
		}
		if cb.Status == "COMPLETED" && body.Latest.Completed == nil {
			body.Latest.Completed = &cb
		}
	}
	writeJSON(w, http.StatusOK, body)
}

type savepointBody struct {
	Path string `json:"path"`
}

type errorBody struct {
	Error string `json:"error"`
}

// running answers 409 unless the job is running.
func (s *apiServer) running(w http.ResponseWriter) bool {
	if state := displayState(s.o.job.Status().State); state != "RUNNING" {
		writeJSON(w, http.StatusConflict, errorBody{fmt.Sprintf("the job is %s, not RUNNING", state)})
		return false
	}
	return true
}

func (s *apiServer) savepoint(w http.ResponseWriter, r *http.Request) {
	if !s.running(w) {
		return
	}
	path, err := s.ctl.savepoint(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, savepointBody{path})
}

// stop stops the job with a savepoint (savepoint=true, the default) or
// cancels it at once (savepoint=false).
func (s *apiServer) stop(w http.ResponseWriter, r *http.Request) {
	withSavepoint := true
	if q := r.URL.Query().Get("savepoint"); q != "" {
		b, err := strconv.ParseBool(q)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{fmt.Sprintf("savepoint=%q: want true or false", q)})
			return
		}
		withSavepoint = b
	}
	if !withSavepoint {
		s.ctl.cancel(errors.New("cancelled through the HTTP API"))
		writeJSON(w, http.StatusAccepted, struct {
			State string `json:"state"`
		}{"CANCELLING"})
		return
	}
	if !s.running(w) {
		return
	}
	// The stop goes on when the client hangs up: the job is stopping.
	path, err := s.ctl.stopWithSavepoint(context.WithoutCancel(r.Context()))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, savepointBody{path})
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, errAlreadyStopping):
		code = http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	writeJSON(w, code, errorBody{err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
