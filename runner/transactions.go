package runner

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
)

func newTransactionsCmd() *cobra.Command {
	var brokers []string
	var prefix string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "transactions",
		Short: "List or abort the open Kafka transactions of a job's transactional id prefix",
	}
	cmd.PersistentFlags().StringSliceVar(&brokers, "brokers", []string{"127.0.0.1:9092"}, "seed brokers (host:port, comma-separated)")
	cmd.PersistentFlags().StringVar(&prefix, "prefix", "", "the job's sink.transactional_id_prefix (required)")
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the cluster")
	connect := func(ctx context.Context) (*kgo.Client, context.Context, context.CancelFunc, error) {
		if prefix == "" {
			return nil, nil, nil, usagef("--prefix is required")
		}
		opts, err := clientOpts(config.Kafka{Brokers: brokers})
		if err != nil {
			return nil, nil, nil, err
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("kafka client: %w", err)
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		if err := pingCluster(ctx, cl, brokers); err != nil {
			cancel()
			cl.Close()
			return nil, nil, nil, err
		}
		return cl, ctx, cancel, nil
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List open transactions of the prefix; each holds its partitions' last stable offset",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, ctx, cancel, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			defer cl.Close()
			open, err := sinkkafka.ListOpenTransactions(ctx, cl, prefix)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "TRANSACTIONAL ID\tSTATE\tPRODUCER\tEPOCH\tAGE\tTIMEOUT\tPARTITIONS")
			for _, ot := range open {
				age := "-"
				if !ot.Started.IsZero() {
					age = time.Since(ot.Started).Round(time.Second).String()
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\t%v\n", ot.TransactionalID, ot.State, ot.ProducerID, ot.ProducerEpoch, age, ot.Timeout, ot.Partitions)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(open) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "no open transaction with prefix %s\n", prefix)
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "abort",
		Short: "Abort every open transaction of the prefix (only while the job is stopped: a pre-committed transaction of a completed checkpoint is lost)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, ctx, cancel, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			defer cl.Close()
			aborted, err := sinkkafka.AbortOpenTransactions(ctx, cl, prefix, time.Minute)
			for _, id := range aborted {
				fmt.Fprintf(cmd.OutOrStdout(), "aborted %s\n", id)
			}
			if err != nil {
				return err
			}
			if len(aborted) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "no open transaction with prefix %s\n", prefix)
			}
			return nil
		},
	})
	return cmd
}
