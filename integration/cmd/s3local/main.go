// Command s3local runs a local S3-compatible server (versitygw with its
// posix backend, package s3server) until interrupted (make s3), or only
// builds it into the cache (make deps).
//
//	go run ./integration/cmd/s3local [-port 7070] [-dir ./data/s3] [-bucket onceflow]
//	go run ./integration/cmd/s3local -build-only
//
// Once the server answers and the bucket exists it prints, on stdout, the
// endpoint and credentials as shell exports: ONCEFLOW_S3_* for the test kit
// (package s3test) and AWS_* for the SDKs. It stops the server on SIGINT or
// SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/onceflow/onceflow/internal/testkit/s3server"
)

func main() {
	buildOnly := flag.Bool("build-only", false, "build versitygw "+s3server.Version+" into the cache if it is not there, and exit")
	port := flag.Int("port", 0, "port on 127.0.0.1 (0: pick a free one)")
	dir := flag.String("dir", "", "keep the server's data in this folder (default: a temporary folder, removed on exit)")
	bucket := flag.String("bucket", s3server.DefaultBucket, "bucket to create")
	access := flag.String("access-key", s3server.DefaultAccessKeyID, "root access key id")
	secret := flag.String("secret-key", s3server.DefaultSecretAccessKey, "root secret access key")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "s3local: "+format+"\n", args...) }
	opts := s3server.Options{Port: *port, Dir: *dir, Bucket: *bucket, AccessKeyID: *access, SecretAccessKey: *secret, Logf: logf}
	if *buildOnly {
		start := time.Now()
		bin, built, err := s3server.Build(ctx, opts)
		if err != nil {
			fmt.Fprintln(os.Stderr, "s3local:", err)
			os.Exit(1)
		}
		if built {
			logf("versitygw %s built into %s in %s", s3server.Version, bin, time.Since(start).Round(100*time.Millisecond))
		} else {
			logf("versitygw %s already in %s", s3server.Version, bin)
		}
		return
	}
	s, err := s3server.Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3local:", err)
		os.Exit(1)
	}
	ep := s.Endpoint()
	fmt.Printf(`export ONCEFLOW_S3_ENDPOINT=%s
export ONCEFLOW_S3_ACCESS_KEY_ID=%s
export ONCEFLOW_S3_SECRET_ACCESS_KEY=%s
export ONCEFLOW_S3_BUCKET=%s
export ONCEFLOW_S3_REGION=%s
export AWS_ACCESS_KEY_ID=%s
export AWS_SECRET_ACCESS_KEY=%s
export AWS_REGION=%s
`, ep.URL, ep.AccessKeyID, ep.SecretAccessKey, ep.Bucket, ep.Region, ep.AccessKeyID, ep.SecretAccessKey, ep.Region)
	logf("data in %s, log in %s; Ctrl-C stops it", s.Dir(), s.LogPath())
	select {
	case <-ctx.Done():
	case <-s.Done(): // died on its own: Stop reports how, with its log
	}
	logf("stopping")
	if err := s.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "s3local:", err)
		os.Exit(1)
	}
}
