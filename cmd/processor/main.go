// Command processor runs onceflow's built-in jobs (job.type copy,
// wordcount and aggregate) and operates on what they leave behind:
// checkpoints, savepoints and Kafka transactions. Its command line is
// package runner's, with no Go dataflow (runner.Job{}); a Go job's
// program calls runner.Main with its own.
//
// Exit codes: 0 success, 1 the job or command failed, 2 bad usage or
// configuration.
package main

import "github.com/onceflow/onceflow/runner"

func main() { runner.Main(runner.Job{}) }
