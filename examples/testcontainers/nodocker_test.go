package tcexample

import (
	"strings"
	"testing"
)

// Where no Docker engine answers, the example says so, naming where it
// looked, and points to the README; the container test skips with that
// message. DOCKER_HOST at a socket that does not exist stands for a
// machine without Docker, wherever the test runs.
func TestNoDockerEngineSaysSo(t *testing.T) {
	host := "unix://" + t.TempDir() + "/docker.sock"
	t.Setenv("DOCKER_HOST", host)
	err := dockerEngine()
	if err == nil {
		t.Fatalf("dockerEngine() = nil with DOCKER_HOST=%s, where nothing listens", host)
	}
	prefix := "no Docker engine answers at " + host
	suffix := ": this example needs Docker; see README"
	if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.HasSuffix(msg, suffix) {
		t.Fatalf("dockerEngine() = %q, want %q...%q", msg, prefix, suffix)
	}
}

// On this machine, when no engine answers where it looks by default, the
// message names those places.
func TestNoDockerEngineNamesWhereItLooked(t *testing.T) {
	t.Setenv("DOCKER_HOST", "")
	err := dockerEngine()
	if err == nil {
		t.Skip("a Docker engine answers here: nothing to check")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "no Docker engine answers at ") || !strings.HasSuffix(msg, ": this example needs Docker; see README") ||
		!strings.Contains(msg, "/var/run/docker.sock") {
		t.Fatalf("dockerEngine() = %q, want it to name /var/run/docker.sock and point to the README", msg)
	}
}
