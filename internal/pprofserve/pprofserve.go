// Package pprofserve serves net/http/pprof for the CPU and heap profiles
// of a running command (the processor built with the pprof tag, the
// benchmark's gopipe), at an address an environment variable names.
// Importing it registers /debug/pprof on http.DefaultServeMux, so only
// commands that mean to serve profiles import it.
package pprofserve

import (
	"log"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// FromEnv serves net/http/pprof at the address in the environment
// variable env, when it is set; it does nothing otherwise. The server
// lives as long as the process (it has no stop path of its own); a
// failure to listen is logged, and the command runs on without it.
func FromEnv(env string) {
	addr := os.Getenv(env)
	if addr == "" {
		return
	}
	go func() {
		log.Printf("pprof at %s: %v", addr, http.ListenAndServe(addr, nil))
	}()
}
