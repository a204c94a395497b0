package objstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/objstore"
)

func TestOptionsValidate(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := objstore.Options{Bucket: "checkpoints", Endpoint: "https://s3.example.com:9000/", AccessKeyID: "ak", SecretAccessKey: "sk"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
	if err := (objstore.Options{Bucket: "checkpoints"}).Validate(); err != nil {
		t.Fatalf("AWS S3 with the default chain refused: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*objstore.Options)
		want string
	}{
		{"no bucket", func(o *objstore.Options) { o.Bucket = "" }, "Options.Bucket"},
		{"uppercase bucket", func(o *objstore.Options) { o.Bucket = "Checkpoints" }, "Options.Bucket \"Checkpoints\""},
		{"bucket ending in -", func(o *objstore.Options) { o.Bucket = "checkpoints-" }, "starts and ends"},
		{"endpoint without scheme", func(o *objstore.Options) { o.Endpoint = "127.0.0.1:9000" }, "Options.Endpoint \"127.0.0.1:9000\""},
		{"endpoint ftp", func(o *objstore.Options) { o.Endpoint = "ftp://host" }, "Options.Endpoint"},
		{"endpoint with user", func(o *objstore.Options) { o.Endpoint = "https://ak:sk@host" }, "Options.Endpoint"},
		{"unparsable endpoint with user", func(o *objstore.Options) { o.Endpoint = "https://ak:sk@host:port:x/p" }, "Options.Endpoint"},
		{"CA file on http", func(o *objstore.Options) { o.Endpoint, o.CAFile = "http://host", notPEM }, "https://"},
		{"insecure on http", func(o *objstore.Options) { o.Endpoint, o.InsecureSkipVerify = "http://host", true }, "https://"},
		{"missing CA file", func(o *objstore.Options) { o.CAFile = filepath.Join(dir, "none.pem") }, "none.pem"},
		{"CA file not PEM", func(o *objstore.Options) { o.CAFile = notPEM }, "holds no PEM certificate"},
		{"key without secret", func(o *objstore.Options) { o.SecretAccessKey = "" }, "go together"},
		{"secret without key", func(o *objstore.Options) { o.AccessKeyID = "" }, "go together"},
		{"token alone", func(o *objstore.Options) { o.AccessKeyID, o.SecretAccessKey, o.SessionToken = "", "", "tok" }, "SessionToken"},
		{"negative timeout", func(o *objstore.Options) { o.RequestTimeout = -1 }, "RequestTimeout"},
		{"negative attempts", func(o *objstore.Options) { o.MaxAttempts = -1 }, "MaxAttempts"},
		{"negative backoff", func(o *objstore.Options) { o.MaxBackoff = -1 }, "MaxBackoff"},
		{"page too large", func(o *objstore.Options) { o.ListPageSize = 1001 }, "ListPageSize 1001"},
	} {
		o := ok
		c.edit(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error saying %q", c.name, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), "sk@") || strings.Contains(err.Error(), `"sk"`) {
			t.Errorf("%s: the error shows the secret: %v", c.name, err)
		}
		// New refuses the same before any request.
		if _, nerr := objstore.New(context.Background(), o); nerr == nil || nerr.Error() != err.Error() {
			t.Errorf("%s: New says %v; Validate said %v", c.name, nerr, err)
		}
	}
}

// The secret and the session token never show, however the options are
// printed or logged; the defaults do.
func TestOptionsRedactSecrets(t *testing.T) {
	const secret, token = "wJalrXUtnFEMI-secret", "FwoGZXIvYXdzE-token"
	o := objstore.Options{Bucket: "checkpoints", Endpoint: "http://127.0.0.1:7070", PathStyle: true,
		AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: secret, SessionToken: token}
	var logged bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	log.Info("storage", "s3", o)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("storage", "s3", o)
	asJSON, err := json.Marshal(struct{ S3 objstore.Options }{o})
	if err != nil {
		t.Fatal(err)
	}
	type wrapper struct{ S3 objstore.Options }
	outputs := map[string]string{
		"String": o.String(), "%v": fmt.Sprintf("%v", o), "%+v": fmt.Sprintf("%+v", o), "%#v": fmt.Sprintf("%#v", o),
		"%s": fmt.Sprintf("%s", o), "%+v of a struct holding it": fmt.Sprintf("%+v", wrapper{o}),
		"%#v of a struct holding it": fmt.Sprintf("%#v", wrapper{o}), "pointer": fmt.Sprintf("%v", &o),
		"slog": logged.String(), "json": string(asJSON),
	}
	for how, out := range outputs {
		if strings.Contains(out, secret) || strings.Contains(out, token) {
			t.Errorf("%s shows a secret: %s", how, out)
		}
	}
	for _, want := range []string{"s3://checkpoints", "http://127.0.0.1:7070", "access_key_id=AKIDEXAMPLE", "secret_access_key=[redacted]",
		"session_token=[redacted]", "region=us-east-1", "request_timeout=30s", "max_attempts=5", "list_page_size=1000"} {
		if !strings.Contains(o.String(), want) {
			t.Errorf("String %q does not say %q", o.String(), want)
		}
	}
	if !strings.Contains(logged.String(), `"secret_access_key":"[redacted]"`) || !strings.Contains(logged.String(), `"access_key_id":"AKIDEXAMPLE"`) {
		t.Errorf("slog JSON: %s", logged.String())
	}
	if s := (objstore.Options{Bucket: "b12"}).String(); !strings.Contains(s, "credentials=default-chain") || !strings.Contains(s, "AWS S3 (region us-east-1)") {
		t.Errorf("String of AWS S3 with the default chain: %s", s)
	}
}

// New against an https endpoint trusts the system's authorities and the
// CA file's, or any certificate with InsecureSkipVerify; an untrusted
// certificate is named as such. (A fake service answering every request
// with 200: only the TLS setup is under test.)
func TestNewTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	base := objstore.Options{Bucket: "checkpoints", Endpoint: srv.URL, PathStyle: true, AccessKeyID: "ak", SecretAccessKey: "sk", MaxAttempts: 1}
	ctx := context.Background()

	_, err := objstore.New(ctx, base)
	if err == nil || !strings.Contains(err.Error(), "TLS certificate") || !strings.Contains(err.Error(), srv.URL) {
		t.Fatalf("New with an untrusted certificate: %v; want an error naming the certificate and %s", err, srv.URL)
	}
	for name, edit := range map[string]func(*objstore.Options){
		"CAFile":             func(o *objstore.Options) { o.CAFile = ca },
		"InsecureSkipVerify": func(o *objstore.Options) { o.InsecureSkipVerify = true },
	} {
		o := base
		edit(&o)
		s, err := objstore.New(ctx, o)
		if err != nil {
			t.Fatalf("New with %s: %v", name, err)
		}
		_ = s.Close()
	}
}

// An endpoint nothing listens on is named in New's error, after the
// bounded retries.
func TestNewUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + l.Addr().String()
	_ = l.Close()
	o := objstore.Options{Bucket: "checkpoints", Endpoint: endpoint, PathStyle: true, AccessKeyID: "ak", SecretAccessKey: "sk"}
	start := time.Now()
	_, err = objstore.New(context.Background(), o)
	t.Logf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
	for _, want := range []string{"unreachable", endpoint, "bucket checkpoints", "up to 5 attempts", "connection refused"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("New of an unreachable endpoint: %v; want it to say %q", err, want)
		}
	}
}
