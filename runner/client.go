package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/onceflow/onceflow/config"
)

// tokenEnv is the environment variable the commands that call the API
// read the token from when --token is not given (the running job reads
// http.token from the same variable).
const tokenEnv = config.EnvPrefix + "_HTTP_TOKEN"

// clientFlags are the flags of the commands that call a running job's
// API.
type clientFlags struct {
	addr    string
	timeout time.Duration
	token   string
}

// apiClient talks to the HTTP API of a running processor.
type apiClient struct {
	base    string
	timeout time.Duration
	// token is sent as a bearer token when not empty.
	token config.Secret
}

// newAPIClient is a client as f says; the token is --token, else the
// environment's ONCEFLOW_HTTP_TOKEN.
func newAPIClient(d deps, f clientFlags) (apiClient, error) {
	addr := f.addr
	if addr == "" {
		return apiClient{}, usagef("--http is required")
	}
	if f.timeout <= 0 {
		return apiClient{}, usagef("--timeout must be positive")
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	token := f.token
	if token == "" {
		token = d.getenv(tokenEnv)
	}
	return apiClient{base: strings.TrimSuffix(addr, "/"), timeout: f.timeout, token: config.Secret(token)}, nil
}

// post sends a POST to path and decodes a JSON answer into out; a non-2xx
// answer is an error carrying the server's message.
func (c apiClient) post(ctx context.Context, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, nil)
	if err != nil {
		return usagef("--http: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+string(c.token))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("job API at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("job API at %s: reading the answer: %w", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		msg := strings.TrimSpace(string(body))
		var eb errorBody
		if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		if resp.StatusCode == http.StatusUnauthorized {
			if c.token == "" {
				msg += " (no token was sent: give it with --token or " + tokenEnv + ")"
			} else {
				msg += " (the token sent, from --token or " + tokenEnv + ", is not the job's http.token)"
			}
		}
		return fmt.Errorf("job API at %s: %s: %s", c.base, resp.Status, msg)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("job API at %s: decoding the answer: %w", c.base, err)
	}
	return nil
}

func addClientFlags(cmd *cobra.Command, f *clientFlags) {
	cmd.Flags().StringVar(&f.addr, "http", "127.0.0.1:8081", "the running processor's HTTP address (its http.listen)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long to wait for the answer")
	cmd.Flags().StringVar(&f.token, "token", "", "the job's http.token, sent as a bearer token (default $"+tokenEnv+"; the variable keeps it out of the process list)")
}

func newSavepointCmd(d deps) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "savepoint --http ADDR",
		Short: "Take a savepoint of a running job and print its path (the job goes on)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAPIClient(d, f)
			if err != nil {
				return err
			}
			var sp savepointBody
			if err := c.post(cmd.Context(), "/api/v1/savepoint", &sp); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), sp.Path)
			return nil
		},
	}
	addClientFlags(cmd, &f)
	return cmd
}

func newStopCmd(d deps) *cobra.Command {
	var f clientFlags
	var withSavepoint bool
	cmd := &cobra.Command{
		Use:   "stop --savepoint --http ADDR",
		Short: "Stop a running job with a savepoint and print its path (--savepoint=false cancels it at once instead)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAPIClient(d, f)
			if err != nil {
				return err
			}
			if !withSavepoint {
				var st struct {
					State string `json:"state"`
				}
				if err := c.post(cmd.Context(), "/api/v1/stop?savepoint=false", &st); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "cancelling")
				return nil
			}
			var sp savepointBody
			if err := c.post(cmd.Context(), "/api/v1/stop?savepoint=true", &sp); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), sp.Path)
			return nil
		},
	}
	addClientFlags(cmd, &f)
	cmd.Flags().BoolVar(&withSavepoint, "savepoint", true, "stop with a savepoint; false cancels without one")
	return cmd
}
