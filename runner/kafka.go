package runner

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/outage"
)

// clientOpts turns the kafka section of the configuration into franz-go
// options. Unreadable TLS files are errors naming the key and path. Every
// client of the job retries as Kafka's Java clients do
// (outage.ClientBackoff): the group members, the checks and the listings
// as well as the source and the sink, which set it themselves too.
func clientOpts(k config.Kafka) ([]kgo.Opt, error) {
	opts := append(outage.ClientOpts(), kgo.SeedBrokers(k.Brokers...))
	if k.TLS.Enabled || k.TLS.CAFile != "" || k.TLS.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: k.TLS.ServerName, InsecureSkipVerify: k.TLS.InsecureSkipVerify}
		if k.TLS.CAFile != "" {
			pem, err := os.ReadFile(k.TLS.CAFile)
			if err != nil {
				return nil, usagef("kafka.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, usagef("kafka.tls.ca_file: %s holds no PEM certificate", k.TLS.CAFile)
			}
			tc.RootCAs = pool
		}
		if k.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(k.TLS.CertFile, k.TLS.KeyFile)
			if err != nil {
				return nil, usagef("kafka.tls.cert_file/key_file: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	user, pass := k.SASL.Username, string(k.SASL.Password)
	switch k.SASL.Mechanism {
	case "":
	case "plain":
		opts = append(opts, kgo.SASL(plain.Plain(func(context.Context) (plain.Auth, error) {
			return plain.Auth{User: user, Pass: pass}, nil
		})))
	case "scram-sha-256", "scram-sha-512":
		auth := func(context.Context) (scram.Auth, error) { return scram.Auth{User: user, Pass: pass}, nil }
		if k.SASL.Mechanism == "scram-sha-256" {
			opts = append(opts, kgo.SASL(scram.Sha256(auth)))
		} else {
			opts = append(opts, kgo.SASL(scram.Sha512(auth)))
		}
	default:
		return nil, usagef("kafka.sasl.mechanism: %q is not one of plain, scram-sha-256, scram-sha-512", k.SASL.Mechanism)
	}
	return opts, nil
}

// pingCluster fails fast, naming the brokers, when the cluster does not
// answer.
func pingCluster(ctx context.Context, cl *kgo.Client, brokers []string) error {
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka brokers %v unreachable: %w", brokers, err)
	}
	return nil
}
