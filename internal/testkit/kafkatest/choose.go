package kafkatest

import (
	"fmt"
	"strings"
)

// The environment variables that choose Bootstrap's cluster.
const (
	// envBootstrap names an existing cluster: comma-separated host:port.
	envBootstrap = "KAFKA_BOOTSTRAP"
	// envForce forces what the kit starts: "local" or "docker" ("" or
	// "auto" chooses as the package doc says).
	envForce = "ONCEFLOW_KAFKA"
)

// source is where Bootstrap's cluster comes from.
type source int

const (
	fromEnv    source = iota + 1 // the cluster named by KAFKA_BOOTSTRAP
	fromDocker                   // an apache/kafka container (dockerImage)
	fromLocal                    // Local(t, Kind{}), from the broker's jars
)

func (s source) String() string {
	switch s {
	case fromEnv:
		return envBootstrap
	case fromDocker:
		return "docker"
	case fromLocal:
		return "local"
	}
	return fmt.Sprintf("source(%d)", int(s))
}

// choice is the outcome of choose.
type choice struct {
	from source
	// seeds are KAFKA_BOOTSTRAP's brokers (fromEnv only).
	seeds []string
	// forced is set when ONCEFLOW_KAFKA named the source: then a failure
	// to start it fails the tests instead of falling back.
	forced bool
	// why says how the choice was made, for the log.
	why string
}

// choose decides where Bootstrap's cluster comes from:
//
//  1. ONCEFLOW_KAFKA=local or =docker forces that source, whether or not
//     KAFKA_BOOTSTRAP is set; forced docker is an error, wrapping
//     dockerAnswers' reason, when no engine answers.
//  2. Otherwise KAFKA_BOOTSTRAP, when set, names the cluster.
//  3. Otherwise Docker when dockerAnswers returns nil,
//  4. else the local jar broker.
//
// An ONCEFLOW_KAFKA value other than "", auto, local or docker, or a
// KAFKA_BOOTSTRAP that names no broker, is an error. dockerAnswers is
// called at most once, and only when the choice depends on it.
func choose(getenv func(string) string, dockerAnswers func() error) (choice, error) {
	force := strings.ToLower(strings.TrimSpace(getenv(envForce)))
	switch force {
	case "local":
		return choice{from: fromLocal, forced: true, why: envForce + "=local" + ignoring(getenv)}, nil
	case "docker":
		if err := dockerAnswers(); err != nil {
			return choice{}, fmt.Errorf("%s=docker, but Docker is not available: %w", envForce, err)
		}
		return choice{from: fromDocker, forced: true, why: envForce + "=docker" + ignoring(getenv)}, nil
	case "", "auto":
	default:
		return choice{}, fmt.Errorf("%s=%q: want local, docker, auto or unset", envForce, getenv(envForce))
	}
	if env := strings.TrimSpace(getenv(envBootstrap)); env != "" {
		var seeds []string
		for s := range strings.SplitSeq(env, ",") {
			if s = strings.TrimSpace(s); s != "" {
				seeds = append(seeds, s)
			}
		}
		if len(seeds) == 0 {
			return choice{}, fmt.Errorf("%s=%q names no broker (want host:port[,host:port...])", envBootstrap, env)
		}
		return choice{from: fromEnv, seeds: seeds, why: envBootstrap + " is set"}, nil
	}
	if err := dockerAnswers(); err != nil {
		return choice{from: fromLocal, why: fmt.Sprintf("%s is unset and Docker is not available (%v)", envBootstrap, err)}, nil
	}
	return choice{from: fromDocker, why: envBootstrap + " is unset and a Docker engine answers"}, nil
}

// ignoring notes, for the log, a KAFKA_BOOTSTRAP that a forced choice
// overrides.
func ignoring(getenv func(string) string) string {
	if strings.TrimSpace(getenv(envBootstrap)) != "" {
		return " (" + envBootstrap + " ignored)"
	}
	return ""
}
