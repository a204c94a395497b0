package tcexample

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go"
)

// dockerSockets are the places a local Docker engine listens when
// DOCKER_HOST is unset: Docker's own socket, rootless Docker's and Docker
// Desktop's.
func dockerSockets() []string {
	s := []string{"/var/run/docker.sock"}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		s = append(s, filepath.Join(d, "docker.sock"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		s = append(s, filepath.Join(home, ".docker", "run", "docker.sock"),
			filepath.Join(home, ".docker", "desktop", "docker.sock"))
	}
	return s
}

// noDocker is the error of a machine where no Docker engine answers at
// where.
func noDocker(where string) error {
	return fmt.Errorf("no Docker engine answers at %s: this example needs Docker; see README", where)
}

// dockerEngine returns nil when a Docker engine answers a ping within 3 s,
// else noDocker naming where it looked: DOCKER_HOST when set, else the
// first socket that exists, else every socket it looked for. Without
// DOCKER_HOST and without a socket it does not call Docker at all.
func dockerEngine() error {
	where := os.Getenv("DOCKER_HOST")
	if where == "" {
		for _, s := range dockerSockets() {
			if _, err := os.Stat(s); err == nil {
				where = "unix://" + s
				break
			}
		}
		if where == "" {
			return noDocker(strings.Join(dockerSockets(), " or "))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := ping(ctx); err != nil {
		return noDocker(fmt.Sprintf("%s (%s)", where, strings.Join(strings.Fields(err.Error()), " ")))
	}
	return nil
}

// ping pings the engine testcontainers uses (it finds the host as the
// containers' start will).
func ping(ctx context.Context) (err error) {
	defer func() {
		// testcontainers panics when it finds no Docker host at all.
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = cli.Ping(ctx)
	return err
}
