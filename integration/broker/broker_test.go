package broker

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMissingJavaIsAClearErrorAtOnce(t *testing.T) {
	start := time.Now()
	_, err := Start(context.Background(), Options{Java: "/nonexistent/bin/java"})
	if err == nil || !strings.Contains(err.Error(), "java not found") || !strings.Contains(err.Error(), "JAVA_HOME") {
		t.Fatalf("err = %v, want a java-not-found error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s to notice java is missing", d)
	}
}

func TestTakenPortFailsFastWithTheBrokerLog(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	start := time.Now()
	c, err := Start(context.Background(), Options{Ports: []int{port}, StartTimeout: 90 * time.Second})
	if err == nil {
		c.Stop()
		t.Fatal("started on a port that is taken")
	}
	if !strings.Contains(err.Error(), "exited while starting") || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("err = %v, want the broker's bind failure", err)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Fatalf("took %s to report the failure", d)
	}
}

func TestMissingMavenAndNoCacheIsAClearError(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := FetchJars(context.Background(), "4.1.1", t.TempDir(), t.Logf)
	if err == nil || !strings.Contains(err.Error(), "mvn is not installed") {
		t.Fatalf("err = %v", err)
	}
}

// Three nodes with min.insync.replicas 2 keep accepting acks=all writes
// after one node is killed with SIGKILL, and the node comes back.
func TestThreeNodesSurviveTheLossOfOne(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Nodes: 3, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.DefaultProduceTopic("rf3"), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopic(ctx, 1, 3, nil, "rf3")
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	produce := func(v string) error {
		pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		return cl.ProduceSync(pctx, &kgo.Record{Value: []byte(v)}).FirstErr()
	}
	if err := produce("before"); err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(1); err != nil {
		t.Fatal(err)
	}
	if err := produce("after-kill"); err != nil {
		t.Fatalf("acks=all write with 2 of 3 replicas alive: %v", err)
	}
	if err := c.Restart(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := produce("after-restart"); err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, "rf3")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("rf3", 0); o.Offset != 3 {
		t.Fatalf("high watermark %d, want 3", o.Offset)
	}
}
