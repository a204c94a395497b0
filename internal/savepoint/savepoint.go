// Package savepoint reads and writes the canonical keyed-state format,
// the one every keyed backend writes savepoints in and restores from.
//
// The canonical keyed-state format is a backend-independent stream of
// entries, used by savepoints (checkpoint.Handle.Backend "canonical") and
// by the memory backend's checkpoints (Backend "memory"). Every backend
// restores it.
//
//	magic "onceflow-kv\x00v1\n"
//	entries, each either a state entry:
//	               0x01 uvarint(keyGroup) uvarint(stateIndex)
//	               uvarint(len key) key uvarint(len userKey) userKey
//	               uvarint(len value) value
//	         or a timer:
//	               0x02 uvarint(keyGroup) uvarint(domain) varint(ts)
//	               uvarint(len key) key
//	trailer: 0x00 uvarint(number of entries, timers included)
//
// stateIndex points into checkpoint.Handle.States; domain is a state.TimeDomain
// (1 event time, 2 processing time) and ts its time in epoch milliseconds
// (zig-zag varint). Entries are written in key-group order, so a reader
// after a rescale can drop what it does not own; within a key group,
// timers and state entries may come in either order. The file checksum
// lives in the checkpoint.FileRef; the trailer catches truncation on its
// own.
//
// Timer entries were added without changing the magic: streams written
// before timers existed hold none and read as before, and a binary from
// before timers refuses a stream holding timers at its first timer entry
// ("bad tag 0x2") rather than dropping them.
package savepoint

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/onceflow/onceflow/state"
)

const formatMagic = "onceflow-kv\x00v1\n"

type Writer struct {
	w   *bufio.Writer
	buf []byte
	n   uint64
}

func NewWriter(w io.Writer) (*Writer, error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	if _, err := bw.WriteString(formatMagic); err != nil {
		return nil, err
	}
	return &Writer{w: bw}, nil
}

func (c *Writer) Add(kg, stateIdx int, key, userKey, value []byte) error {
	b := c.buf[:0]
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(kg))
	b = binary.AppendUvarint(b, uint64(stateIdx))
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(userKey)))
	b = append(b, userKey...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	c.buf = b
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	if _, err := c.w.Write(value); err != nil {
		return err
	}
	c.n++
	return nil
}

func (c *Writer) AddTimer(kg int, d state.TimeDomain, ts int64, key []byte) error {
	b := c.buf[:0]
	b = append(b, 2)
	b = binary.AppendUvarint(b, uint64(kg))
	b = binary.AppendUvarint(b, uint64(d))
	b = binary.AppendVarint(b, ts)
	b = binary.AppendUvarint(b, uint64(len(key)))
	c.buf = b
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	if _, err := c.w.Write(key); err != nil {
		return err
	}
	c.n++
	return nil
}

func (c *Writer) Sink() Sink {
	return Sink{State: c.Add, Timer: c.AddTimer}
}

func (c *Writer) Finish() error {
	b := binary.AppendUvarint([]byte{0}, c.n)
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	return c.w.Flush()
}

// Sink receives the contents of a keyed snapshot: state entries and
// timers.
type Sink struct {
	State func(kg, stateIdx int, key, userKey, value []byte) error
	Timer func(kg int, d state.TimeDomain, ts int64, key []byte) error
}

// Read hands every entry of a canonical stream to sink. The slices
// passed to it are fresh and may be kept.
func Read(r io.Reader, name string, sink Sink) error {
	br := bufio.NewReaderSize(r, 256<<10)
	magic := make([]byte, len(formatMagic))
	if _, err := io.ReadFull(br, magic); err != nil {
		return fmt.Errorf("%s: read header: %w", name, err)
	}
	if string(magic) != formatMagic {
		return fmt.Errorf("%s: not a canonical keyed-state stream", name)
	}
	readBytes := func() ([]byte, error) {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, err
		}
		if n > 1<<31 {
			return nil, fmt.Errorf("length %d too large", n)
		}
		b := make([]byte, n)
		_, err = io.ReadFull(br, b)
		return b, err
	}
	var count uint64
	for {
		tag, err := br.ReadByte()
		if err != nil {
			return fmt.Errorf("%s: entry %d: %w (truncated?)", name, count, noEOF(err))
		}
		if tag == 0 {
			n, err := binary.ReadUvarint(br)
			if err != nil {
				return fmt.Errorf("%s: trailer: %w", name, noEOF(err))
			}
			if n != count {
				return fmt.Errorf("%s: trailer says %d entries, read %d", name, n, count)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				return fmt.Errorf("%s: data after trailer", name)
			}
			return nil
		}
		if tag == 2 {
			if err := readTimer(br, name, count, readBytes, sink.Timer); err != nil {
				return err
			}
			count++
			continue
		}
		if tag != 1 {
			return fmt.Errorf("%s: entry %d: bad tag %#x", name, count, tag)
		}
		kg, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("%s: entry %d: %w", name, count, noEOF(err))
		}
		si, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("%s: entry %d: %w", name, count, noEOF(err))
		}
		key, err := readBytes()
		if err != nil {
			return fmt.Errorf("%s: entry %d key: %w", name, count, noEOF(err))
		}
		uk, err := readBytes()
		if err != nil {
			return fmt.Errorf("%s: entry %d user key: %w", name, count, noEOF(err))
		}
		val, err := readBytes()
		if err != nil {
			return fmt.Errorf("%s: entry %d value: %w", name, count, noEOF(err))
		}
		if kg > 1<<16 || si > 1<<20 {
			return fmt.Errorf("%s: entry %d: key group %d / state %d out of range", name, count, kg, si)
		}
		if err := sink.State(int(kg), int(si), key, uk, val); err != nil {
			return err
		}
		count++
	}
}

// readTimer reads the rest of timer entry number n (after its tag) and
// hands it to fn.
func readTimer(br *bufio.Reader, name string, n uint64, readBytes func() ([]byte, error), fn func(kg int, d state.TimeDomain, ts int64, key []byte) error) error {
	kg, err := binary.ReadUvarint(br)
	if err != nil {
		return fmt.Errorf("%s: entry %d (timer): %w", name, n, noEOF(err))
	}
	d, err := binary.ReadUvarint(br)
	if err != nil {
		return fmt.Errorf("%s: entry %d (timer): %w", name, n, noEOF(err))
	}
	ts, err := binary.ReadVarint(br)
	if err != nil {
		return fmt.Errorf("%s: entry %d (timer): %w", name, n, noEOF(err))
	}
	key, err := readBytes()
	if err != nil {
		return fmt.Errorf("%s: entry %d (timer) key: %w", name, n, noEOF(err))
	}
	if kg > 1<<16 {
		return fmt.Errorf("%s: entry %d (timer): key group %d out of range", name, n, kg)
	}
	if d > 255 {
		return fmt.Errorf("%s: entry %d (timer): unknown time domain %d", name, n, d)
	}
	if td := state.TimeDomain(d); td != state.EventTime && td != state.ProcessingTime {
		return fmt.Errorf("%s: entry %d (timer): unknown time domain %d (want EventTime or ProcessingTime)", name, n, d)
	}
	return fn(int(kg), state.TimeDomain(d), ts, key)
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
