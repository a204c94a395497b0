// Command kafkalocal runs a local Apache Kafka cluster from Maven jars
// until interrupted (make broker, make broker3), or fetches the jars only.
//
//	go run ./integration/cmd/kafkalocal [-nodes 3] [-txn-version 0] [-addr-file F]
//	go run ./integration/cmd/kafkalocal -fetch-only
//
// It prints the bootstrap address on stdout once the cluster answers, and
// stops it cleanly on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/onceflow/onceflow/internal/testkit/broker"
)

func main() {
	nodes := flag.Int("nodes", 1, "1 or 3 nodes")
	tv := flag.Int("txn-version", -1, "format with this transaction.version (0: Kafka 3.x semantics, 2: KIP-890); -1 keeps the default")
	addrFile := flag.String("addr-file", "", "also write the bootstrap address to this file (removed on exit)")
	fetchOnly := flag.Bool("fetch-only", false, "fetch the broker jars into the cache and exit")
	port := flag.Int("port", 0, "PLAINTEXT port of the first node (0: pick a free one)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "kafkalocal: "+format+"\n", args...) }
	if *fetchOnly {
		start := time.Now()
		version := os.Getenv("ONCEFLOW_KAFKA_VERSION")
		if version == "" {
			version = broker.DefaultVersion
		}
		dir, err := broker.FetchJars(ctx, version, "", logf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kafkalocal:", err)
			os.Exit(1)
		}
		logf("jars in %s (%s)", dir, time.Since(start).Round(time.Millisecond))
		return
	}
	opts := broker.Options{Nodes: *nodes, Logf: logf}
	if *tv >= 0 {
		opts.TransactionVersion = broker.TV(*tv)
	}
	if *port > 0 {
		opts.Ports = []int{*port}
	}
	c, err := broker.Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafkalocal:", err)
		os.Exit(1)
	}
	fmt.Println(c.Bootstrap())
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(c.Bootstrap()+"\n"), 0o644); err != nil {
			logf("%v", err)
		}
		defer os.Remove(*addrFile)
	}
	<-ctx.Done()
	logf("stopping")
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "kafkalocal:", err)
		os.Exit(1)
	}
}
