//go:build pprof

package main

import "github.com/onceflow/onceflow/internal/pprofserve"

// With the build tag pprof (go build -tags pprof ./cmd/processor) and
// PROCESSOR_PPROF set to an address, the processor serves net/http/pprof
// there, for heap and CPU profiles of a running job (scripts/pgo.sh takes
// default.pgo's profiles this way). Without the tag nothing of this is
// compiled in; the job's own HTTP API never serves it. (Not
// ONCEFLOW_PPROF: the configuration refuses ONCEFLOW_ variables that name
// no key.)
func init() { pprofserve.FromEnv("PROCESSOR_PPROF") }
