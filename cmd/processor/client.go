package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// apiClient talks to the HTTP API of a running processor.
type apiClient struct {
	base    string
	timeout time.Duration
}

func newAPIClient(addr string, timeout time.Duration) (apiClient, error) {
	if addr == "" {
		return apiClient{}, usagef("--http is required")
	}
	if timeout <= 0 {
		return apiClient{}, usagef("--timeout must be positive")
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return apiClient{base: strings.TrimSuffix(addr, "/"), timeout: timeout}, nil
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
		var eb errorBody
		if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
			return fmt.Errorf("job API at %s: %s: %s", c.base, resp.Status, eb.Error)
		}
		return fmt.Errorf("job API at %s: %s: %s", c.base, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("job API at %s: decoding the answer: %w", c.base, err)
	}
	return nil
}

func addClientFlags(cmd *cobra.Command, addr *string, timeout *time.Duration) {
	cmd.Flags().StringVar(addr, "http", "127.0.0.1:8081", "the running processor's HTTP address (its http.listen)")
	cmd.Flags().DurationVar(timeout, "timeout", 2*time.Minute, "how long to wait for the answer")
}

func newSavepointCmd() *cobra.Command {
	var addr string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "savepoint --http ADDR",
		Short: "Take a savepoint of a running job and print its path (the job goes on)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAPIClient(addr, timeout)
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
	addClientFlags(cmd, &addr, &timeout)
	return cmd
}

func newStopCmd() *cobra.Command {
	var addr string
	var timeout time.Duration
	var withSavepoint bool
	cmd := &cobra.Command{
		Use:   "stop --savepoint --http ADDR",
		Short: "Stop a running job with a savepoint and print its path (--savepoint=false cancels it at once instead)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAPIClient(addr, timeout)
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
	addClientFlags(cmd, &addr, &timeout)
	cmd.Flags().BoolVar(&withSavepoint, "savepoint", true, "stop with a savepoint; false cancels without one")
	return cmd
}
