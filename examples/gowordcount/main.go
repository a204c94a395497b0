// Command gowordcount is the built-in wordcount job written as a Go job on
// package runner: the same output (key the word, value its running count
// as a decimal), from the Dataflow of package wordcount, a dozen lines.
// It runs like the processor, with the same configuration keys, flags,
// HTTP API, metrics and exit codes, in job.mode single or distributed:
//
//	go run ./examples/gowordcount run --config examples/wordcount.yaml --set job.type=go
//
// In job.mode distributed, jobs.KeyBy cuts the job at the word: each
// partition group's lines go through the repartition topic
// <job.name>-count-repartition to the group that counts their words.
package main

import (
	"github.com/onceflow/onceflow/examples/gowordcount/wordcount"
	"github.com/onceflow/onceflow/runner"
)

func main() { runner.Main(runner.Job{Name: "gowordcount", Dataflow: wordcount.Dataflow}) }
