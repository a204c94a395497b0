package main

import (
	"log"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// servePprof serves net/http/pprof at GOPIPE_PPROF when it is set, for
// the CPU profiles that scripts/pgo.sh merges into this command's
// default.pgo (each contender is built with a profile of its own
// workload, as onceflow's processor is). The server lives as long as the
// process.
func servePprof() {
	addr := os.Getenv("GOPIPE_PPROF")
	if addr == "" {
		return
	}
	go func() {
		log.Printf("pprof: %v", http.ListenAndServe(addr, nil))
	}()
}
