package pprofserve

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/testkit/freeport"
)

func TestFromEnvServesProfiles(t *testing.T) {
	ports, err := freeport.Pick(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
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
