//go:build pprof

package main

import (
	"log"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// With the build tag pprof (go build -tags pprof ./cmd/processor) and
// PROCESSOR_PPROF set to an address, the processor serves net/http/pprof
// there, for heap and CPU profiles of a running job. Without the tag
// nothing of this is compiled in; the job's own HTTP API never serves it.
// (Not ONCEFLOW_PPROF: the configuration refuses ONCEFLOW_ variables that
// name no key.)
func init() {
	addr := os.Getenv("PROCESSOR_PPROF")
	if addr == "" {
		return
	}
	go func() { // lives as long as the process; the profile server has no stop path of its own
		log.Printf("pprof: %v", http.ListenAndServe(addr, nil))
	}()
}
