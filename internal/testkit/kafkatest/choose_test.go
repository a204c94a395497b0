package kafkatest

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/testkit/broker"
)

// env is a fake environment for getenv.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// probe is a fake "does Docker answer" that counts its calls.
type probe struct {
	err   error
	calls int
}

func (p *probe) answers() error {
	p.calls++
	return p.err
}

var errNoEngine = errors.New("no engine here")

func TestChooseOrder(t *testing.T) {
	for _, tc := range []struct {
		name       string
		env        func(string) string
		dockerErr  error
		want       source
		wantSeeds  []string
		wantForced bool
		wantProbes int // how often the Docker probe may run
		wantWhy    string
	}{
		{
			name: "KAFKA_BOOTSTRAP beats Docker", env: env("KAFKA_BOOTSTRAP", "a:1, b:2,"),
			want: fromEnv, wantSeeds: []string{"a:1", "b:2"}, wantProbes: 0,
		},
		{
			name: "Docker when it answers", env: env(),
			want: fromDocker, wantProbes: 1,
		},
		{
			name: "local when Docker does not answer", env: env(), dockerErr: errNoEngine,
			want: fromLocal, wantProbes: 1, wantWhy: errNoEngine.Error(),
		},
		{
			name: "blank KAFKA_BOOTSTRAP is unset", env: env("KAFKA_BOOTSTRAP", "  "), dockerErr: errNoEngine,
			want: fromLocal, wantProbes: 1,
		},
		{
			name: "auto is the default order", env: env("ONCEFLOW_KAFKA", "auto"),
			want: fromDocker, wantProbes: 1,
		},
		{
			name: "forced local beats KAFKA_BOOTSTRAP and Docker", env: env("ONCEFLOW_KAFKA", "local", "KAFKA_BOOTSTRAP", "a:1"),
			want: fromLocal, wantForced: true, wantProbes: 0, wantWhy: "KAFKA_BOOTSTRAP ignored",
		},
		{
			name: "forced docker beats KAFKA_BOOTSTRAP", env: env("ONCEFLOW_KAFKA", " Docker ", "KAFKA_BOOTSTRAP", "a:1"),
			want: fromDocker, wantForced: true, wantProbes: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &probe{err: tc.dockerErr}
			got, err := choose(tc.env, p.answers)
			if err != nil {
				t.Fatalf("choose: %v", err)
			}
			if got.from != tc.want || got.forced != tc.wantForced || !slices.Equal(got.seeds, tc.wantSeeds) {
				t.Errorf("choose = {from %s, forced %v, seeds %q}, want {from %s, forced %v, seeds %q}",
					got.from, got.forced, got.seeds, tc.want, tc.wantForced, tc.wantSeeds)
			}
			if p.calls != tc.wantProbes {
				t.Errorf("Docker probed %d times, want %d", p.calls, tc.wantProbes)
			}
			if !strings.Contains(got.why, tc.wantWhy) {
				t.Errorf("why = %q, want it to contain %q", got.why, tc.wantWhy)
			}
		})
	}
}

func TestChooseErrors(t *testing.T) {
	t.Run("forced docker unavailable names why", func(t *testing.T) {
		p := &probe{err: errNoEngine}
		_, err := choose(env("ONCEFLOW_KAFKA", "docker"), p.answers)
		if !errors.Is(err, errNoEngine) {
			t.Fatalf("err = %v, want it to wrap %v", err, errNoEngine)
		}
		if !strings.Contains(err.Error(), "ONCEFLOW_KAFKA=docker") {
			t.Errorf("err = %q, want it to name ONCEFLOW_KAFKA=docker", err)
		}
	})
	t.Run("forced docker unavailable does not fall back to KAFKA_BOOTSTRAP", func(t *testing.T) {
		p := &probe{err: errNoEngine}
		if got, err := choose(env("ONCEFLOW_KAFKA", "docker", "KAFKA_BOOTSTRAP", "a:1"), p.answers); err == nil {
			t.Fatalf("choose = %+v, want an error", got)
		}
	})
	t.Run("unknown ONCEFLOW_KAFKA", func(t *testing.T) {
		p := &probe{}
		_, err := choose(env("ONCEFLOW_KAFKA", "kubernetes"), p.answers)
		if err == nil || !strings.Contains(err.Error(), `"kubernetes"`) {
			t.Fatalf("err = %v, want one naming the value", err)
		}
		if p.calls != 0 {
			t.Errorf("Docker probed %d times for a bad setting, want 0", p.calls)
		}
	})
	t.Run("KAFKA_BOOTSTRAP naming no broker", func(t *testing.T) {
		p := &probe{}
		if got, err := choose(env("KAFKA_BOOTSTRAP", " , ,"), p.answers); err == nil {
			t.Fatalf("choose = %+v, want an error", got)
		}
	})
}

func TestDockerAnswersWithoutSignIsFree(t *testing.T) {
	pinged := false
	ping := func(context.Context) error { pinged = true; return nil }
	nothing := func(string) bool { return false }
	err := dockerAnswers(env("HOME", "/home/u", "XDG_RUNTIME_DIR", "/run/user/7"), nothing, 7, ping)
	if err == nil {
		t.Fatal("dockerAnswers = nil without any sign of Docker")
	}
	if pinged {
		t.Error("pinged an engine without any sign of one")
	}
	for _, s := range []string{"/var/run/docker.sock", "/run/user/7/docker.sock", "/home/u/.docker/run/docker.sock"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("err = %q, want it to name %s", err, s)
		}
	}
}

func TestDockerAnswersPingsOnSign(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    func(string) string
		exists string
	}{
		{"DOCKER_HOST", env("DOCKER_HOST", "tcp://127.0.0.1:2375"), ""},
		{"default socket", env(), "/var/run/docker.sock"},
		{"rootless socket", env("XDG_RUNTIME_DIR", "/run/user/7"), "/run/user/7/docker.sock"},
		{"Docker Desktop socket", env("HOME", "/home/u"), "/home/u/.docker/run/docker.sock"},
		{"testcontainers properties", env("HOME", "/home/u"), "/home/u/.testcontainers.properties"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exists := func(p string) bool { return p == tc.exists }
			var left time.Duration // before the ping's deadline, as the ping starts
			ping := func(ctx context.Context) error {
				if d, ok := ctx.Deadline(); ok {
					left = time.Until(d)
				}
				return errNoEngine
			}
			err := dockerAnswers(tc.env, exists, 7, ping)
			if !errors.Is(err, errNoEngine) {
				t.Fatalf("err = %v, want the ping's error wrapped", err)
			}
			if left <= 0 || left > dockerProbeTimeout {
				t.Errorf("ping had %v before its deadline, want a deadline within %v", left, dockerProbeTimeout)
			}
		})
	}
	t.Run("answering engine", func(t *testing.T) {
		if err := dockerAnswers(env("DOCKER_HOST", "unix:///x.sock"), func(string) bool { return false }, 7,
			func(context.Context) error { return nil }); err != nil {
			t.Fatalf("dockerAnswers = %v, want nil", err)
		}
	})
}

// The container is configured as the issue requires for transactions on
// one node, and advertises the address the host reaches.
func TestDockerConfig(t *testing.T) {
	e := dockerEnv()
	for k, want := range map[string]string{
		"KAFKA_PROCESS_ROLES":                            "broker,controller",
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
		"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
	} {
		if e[k] != want {
			t.Errorf("%s = %q, want %q", k, e[k], want)
		}
	}
	if _, ok := e["KAFKA_ADVERTISED_LISTENERS"]; ok {
		t.Error("KAFKA_ADVERTISED_LISTENERS is fixed before the mapped port is known")
	}
	// The storage tool takes an id starting with '-' for an option.
	if id, err := base64.RawURLEncoding.DecodeString(e["CLUSTER_ID"]); err != nil || len(id) != 16 || strings.HasPrefix(e["CLUSTER_ID"], "-") {
		t.Errorf("CLUSTER_ID %q is not a usable KRaft cluster id (16 bytes, base64url, no leading '-')", e["CLUSTER_ID"])
	}
	if got, want := dockerImage(env()), "apache/kafka:"+broker.DefaultVersion; got != want {
		t.Errorf("image %q, want the local broker's release %q", got, want)
	}
	if got := dockerImage(env("ONCEFLOW_KAFKA_VERSION", "4.0.0")); got != "apache/kafka:4.0.0" {
		t.Errorf("image %q with ONCEFLOW_KAFKA_VERSION=4.0.0, want apache/kafka:4.0.0", got)
	}
	script := starterScriptFor("localhost:49153", "abc123")
	if !strings.Contains(script, "PLAINTEXT://localhost:49153,BROKER://abc123:9093") {
		t.Errorf("starter script does not advertise the mapped port:\n%s", script)
	}
}
