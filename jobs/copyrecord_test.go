package jobs

import (
	"context"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCopyRecordKeepsOnlyWhatTheCopyCarries: the copy's output record is
// the input's key, value, headers, timestamp, partition and context, with
// every field the fetch set cleared, the topic first (it would send the
// record back to the input topic).
func TestCopyRecordKeepsOnlyWhatTheCopyCarries(t *testing.T) {
	// A field added to kgo.Record must be decided on here: kept by the
	// copy, or cleared by copyRecord.
	if n := reflect.TypeOf(kgo.Record{}).NumField(); n != 12 {
		t.Fatalf("kgo.Record has %d fields, copyRecord was written for 12", n)
	}
	ctx := context.WithValue(context.Background(), struct{}{}, "pool")
	at := time.UnixMilli(1_700_000_000_123)
	in := &kgo.Record{
		Key: []byte("k"), Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("1")}},
		Timestamp: at, Topic: "in", Partition: 3, Attrs: recordAttrsWithTxn(t),
		ProducerEpoch: 2, ProducerID: 77, LeaderEpoch: 5, Offset: 1234, Context: ctx,
	}
	got, err := copyRecord(in)
	if err != nil {
		t.Fatal(err)
	}
	want := kgo.Record{Key: []byte("k"), Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("1")}},
		Timestamp: at, Partition: 3, Context: ctx}
	if got != in {
		t.Error("copyRecord allocated a record: it should reuse the fetched one")
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("copyRecord = %+v, want %+v", *got, want)
	}
}

// recordAttrsWithTxn is the attributes of a fetched transactional record
// (bit 4 of the batch's attributes), which kgo.RecordAttrs, one unexported
// byte, does not let a caller build.
func recordAttrsWithTxn(t *testing.T) kgo.RecordAttrs {
	t.Helper()
	var a kgo.RecordAttrs
	if unsafe.Sizeof(a) != 1 {
		t.Fatalf("kgo.RecordAttrs is %d bytes, the test sets one", unsafe.Sizeof(a))
	}
	*(*uint8)(unsafe.Pointer(&a)) = 0x10
	if !a.IsTransactional() {
		t.Fatal("setting bit 4 did not make the attributes transactional")
	}
	return a
}
