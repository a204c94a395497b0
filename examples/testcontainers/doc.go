// Package tcexample is an example of an end-to-end test of an onceflow
// job with testcontainers-go, as a user's own suite would write it: the
// test starts an Apache Kafka container and the processor's Docker image
// (built from the repository's Dockerfile) next to it on one Docker
// network, produces lines, and checks with a read_committed consumer that
// the word counts the processor committed are exactly once, before and
// after it stopped with a savepoint (docker stop: SIGTERM). A second part
// runs a Go job in the test's process against the same container with
// package testdriver's StartKafka.
//
//	go test -v ./examples/testcontainers/
//
// It needs a Docker engine. Where none answers (DOCKER_HOST, else the
// usual sockets), the test skips with
//
//	no Docker engine answers at <DOCKER_HOST or socket>: this example needs Docker; see README
//
// and TestNoDockerEngineSaysSo checks that message, so that the package
// passes on a machine without Docker. The package has no code of its
// own: everything is in its tests.
package tcexample
