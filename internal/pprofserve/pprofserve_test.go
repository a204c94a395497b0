package pprofserve

import (
	"net"
	"net/http"
	"testing"
	"time"
)

func TestFromEnvServesProfiles(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv("PPROFSERVE_TEST", addr)
	FromEnv("PPROFSERVE_TEST")
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/debug/pprof/cmdline")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /debug/pprof/cmdline: %s", resp.Status)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pprof server at %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
