package eventlog

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testSpool(t *testing.T, dir string, segmentSize int64) (*spool, spoolStats, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	s, st, err := openSpool(dir, slog.New(slog.NewTextHandler(logs, nil)), segmentSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return s, st, logs
}

func recordData(i int) []byte {
	return fmt.Appendf(nil, `{"id":"ev-%d","type":"test","v":1,"ts":1,"node":"n","data":{"i":%d}}`, i, i)
}

func appendN(t *testing.T, s *spool, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := s.append(fmt.Sprintf("sip.tx.%d", i%16), fmt.Sprintf("ev-%d", i), recordData(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// readAll reads from pos to the end and checks the records are from..from+n-1.
func readAll(t *testing.T, r *spoolReader, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		rec, at, ok, err := r.next()
		if err != nil || !ok {
			t.Fatalf("record %d: ok %v err %v", i, ok, err)
		}
		if rec.id != fmt.Sprintf("ev-%d", i) || rec.subject != fmt.Sprintf("sip.tx.%d", i%16) || !bytes.Equal(rec.data, recordData(i)) {
			t.Fatalf("record %d: got %s %s %s", i, rec.subject, rec.id, rec.data)
		}
		if at.idx+1 != r.pos.idx {
			t.Fatalf("record %d: position %d, reader at %d", i, at.idx, r.pos.idx)
		}
	}
	if _, _, ok, err := r.next(); ok || err != nil {
		t.Fatalf("after %d records: ok %v err %v, want the end", from+n, ok, err)
	}
}

func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*"+spoolExt))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestSpoolAppendReadConfirmAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	s, st, _ := testSpool(t, dir, 4<<10)
	if st.records != 0 || st.segments != 0 {
		t.Fatalf("fresh spool: %+v", st)
	}
	appendN(t, s, 0, 500)
	if got := len(segmentFiles(t, dir)); got < 5 {
		t.Fatalf("%d segments for 500 records of ~100 bytes in 4 KiB segments", got)
	}
	r := s.reader(s.headPos())
	defer r.close()
	readAll(t, r, 0, 500)

	// The reader follows appends, across a rotation.
	appendN(t, s, 500, 100)
	readAll(t, r, 500, 100)
	if s.waiting() != 600 {
		t.Fatalf("waiting %d, want 600", s.waiting())
	}

	// Confirm the first 300: the segments holding only those go.
	r2 := s.reader(s.headPos())
	for range 300 {
		if _, _, ok, err := r2.next(); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	before := len(segmentFiles(t, dir))
	s.confirm(r2.pos)
	r2.close()
	if s.waiting() != 300 {
		t.Fatalf("waiting %d after confirming 300 of 600", s.waiting())
	}
	if after := len(segmentFiles(t, dir)); after >= before {
		t.Fatalf("segments %d -> %d after confirming half", before, after)
	}

	// A new run finds the 300 unconfirmed records, plus the rest of
	// the segment that held the 300th (confirmed records are only
	// dropped with whole segments).
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	s2, st2, _ := testSpool(t, dir, 4<<10)
	if st2.records < 300 || st2.records >= 600 || st2.torn != 0 {
		t.Fatalf("reopened: %+v", st2)
	}
	first := 600 - int(st2.records)
	r3 := s2.reader(s2.headPos())
	defer r3.close()
	readAll(t, r3, first, int(st2.records))

	// Confirming everything leaves no segment behind.
	s2.confirm(r3.pos)
	if files := segmentFiles(t, dir); len(files) != 0 || s2.waiting() != 0 {
		t.Fatalf("after confirming all: files %v waiting %d", files, s2.waiting())
	}
	// And the spool takes records again, readable by the old reader.
	appendN(t, s2, 600, 3)
	readAll(t, r3, 600, 3)
}

func TestSpoolCutsOffTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		tear func(t *testing.T, path string)
	}{
		{"short body", func(t *testing.T, path string) { truncateBy(t, path, 7) }},
		{"short header", func(t *testing.T, path string) {
			// Leave 3 bytes of the last record's header.
			fi, _ := os.Stat(path)
			last := int64(recordHeaderSize + 2 + len("sip.tx.9") + 2 + len("ev-9") + len(recordData(9)))
			if err := os.Truncate(path, fi.Size()-last+3); err != nil {
				t.Fatal(err)
			}
		}},
		{"checksum mismatch", func(t *testing.T, path string) { flipLastByte(t, path) }},
		{"garbage after the last record", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
			f.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _, _ := testSpool(t, dir, 1<<20)
			appendN(t, s, 0, 10)
			s.close()
			files := segmentFiles(t, dir)
			if len(files) != 1 {
				t.Fatalf("segments %v", files)
			}
			tc.tear(t, files[0])

			s2, st, logs := testSpool(t, dir, 1<<20)
			want := uint64(9)
			if tc.name == "garbage after the last record" {
				want = 10
			}
			if st.records != want || st.torn != 1 {
				t.Fatalf("reopened: %+v, want %d records and 1 torn segment", st, want)
			}
			if !strings.Contains(logs.String(), "torn or corrupt record, cut off") {
				t.Fatalf("no log line about the torn record:\n%s", logs)
			}
			// New records go after the intact ones and all read back.
			appendN(t, s2, int(want), 5)
			r := s2.reader(s2.headPos())
			defer r.close()
			readAll(t, r, 0, int(want)+5)
		})
	}
}

func TestSpoolSegmentWithoutHeader(t *testing.T) {
	dir := t.TempDir()
	// A crash right after creating a segment leaves it empty or with
	// part of the magic: nothing to recover, nothing to report lost.
	os.WriteFile(filepath.Join(dir, "00000000000000000001"+spoolExt), []byte(spoolMagic[:3]), 0o640)
	// A file that is not ours is moved aside, not deleted.
	os.WriteFile(filepath.Join(dir, "00000000000000000002"+spoolExt), []byte("something else entirely"), 0o640)
	s, st, logs := testSpool(t, dir, 1<<20)
	if st.records != 0 {
		t.Fatalf("%+v", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "00000000000000000002"+spoolExt+".bad")); err != nil {
		t.Fatalf("foreign file not moved aside: %v\n%s", err, logs)
	}
	appendN(t, s, 0, 2)
	r := s.reader(s.headPos())
	defer r.close()
	readAll(t, r, 0, 2)
}

func TestSpoolDirLocked(t *testing.T) {
	dir := t.TempDir()
	testSpool(t, dir, 1<<20)
	if _, _, err := openSpool(dir, slog.Default(), 1<<20); !errors.Is(err, ErrSpoolLocked) {
		t.Fatalf("second open: %v, want ErrSpoolLocked", err)
	}
}

func TestSpoolRejectsOversizedFields(t *testing.T) {
	s, _, _ := testSpool(t, t.TempDir(), 1<<20)
	if err := s.append(strings.Repeat("x", 70000), "id", nil); err == nil {
		t.Fatal("a 70000-byte subject was accepted")
	}
	if s.waiting() != 0 {
		t.Fatal("a rejected record counts as waiting")
	}
}

func truncateBy(t *testing.T, path string, n int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()-n); err != nil {
		t.Fatal(err)
	}
}

func flipLastByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0xff
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSpoolAppend measures spooling a transaction-sized event (one
// write(2) each; fsync is periodic and not part of it).
func BenchmarkSpoolAppend(b *testing.B) {
	s, _, err := openSpool(b.TempDir(), slog.Default(), defaultSegmentSize)
	if err != nil {
		b.Fatal(err)
	}
	defer s.close()
	data := bytes.Repeat([]byte("x"), 600)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := s.append("sip.tx.7", "0199a3b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b", data); err != nil {
			b.Fatal(err)
		}
		// Confirm now and then, as the replayer does, so the disk use
		// stays bounded however long the benchmark runs.
		if i%100000 == 99999 {
			s.confirm(spoolPos{idx: s.end})
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
