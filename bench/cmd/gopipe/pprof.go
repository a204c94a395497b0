package main

import "github.com/onceflow/onceflow/internal/pprofserve"

// servePprof serves net/http/pprof at GOPIPE_PPROF when it is set, for
// the CPU profiles that scripts/pgo.sh merges into this command's
// default.pgo (each contender is built with a profile of its own
// workload, as onceflow's processor is).
func servePprof() { pprofserve.FromEnv("GOPIPE_PPROF") }
