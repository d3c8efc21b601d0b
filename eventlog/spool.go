package eventlog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The spool is an append-only log of events on local disk, kept in
// segment files named <number>.spool in the spool directory. A segment
// starts with spoolMagic and holds records:
//
//	u32 body length | u32 CRC-32C of the body | body      (big endian)
//	body: u16 subject length | subject | u16 id length | id | event JSON
//
// Every record is written with one write(2), so a crash of the process
// never loses a record Publish accepted; the file is fsynced periodically,
// so a power cut can cost the last sync interval. A record torn by a crash
// fails its length or CRC check and is cut off when the spool is opened.
// Segments are deleted once every record in them is confirmed by
// JetStream; record indexes count from zero each time the spool is opened.

const (
	spoolMagic         = "CCSPOOL1"
	spoolExt           = ".spool"
	spoolLockFile      = "LOCK"
	recordHeaderSize   = 8
	maxRecordSize      = 64 << 20
	defaultSegmentSize = 16 << 20
)

var (
	// ErrSpoolLocked: another publisher (in this or another process) has
	// the spool directory open.
	ErrSpoolLocked = errors.New("spool directory in use by another publisher")
	// ErrSpoolCorrupt: a spool record failed its checks while being read
	// back in the same run that wrote it (disk trouble).
	ErrSpoolCorrupt = errors.New("spool record corrupt")

	errSpoolClosed = errors.New("spool closed")
	castagnoli     = crc32.MakeTable(crc32.Castagnoli)
)

// spoolRecord is one spooled event: what is needed to publish it again.
type spoolRecord struct {
	subject string
	id      string
	data    []byte
}

// spoolPos is the place of a record: its segment, byte offset and index.
type spoolPos struct {
	seg uint64
	off int64
	idx uint64
}

type segment struct {
	num   uint64
	size  int64  // bytes of complete records, magic included
	first uint64 // index of its first record
	count uint64
}

// spoolStats tells what opening a spool found.
type spoolStats struct {
	records  uint64 // complete records recovered
	segments int
	torn     int // segments whose tail was cut off
}

type spool struct {
	dir         string
	log         *slog.Logger
	segmentSize int64
	lock        *os.File

	mu      sync.Mutex
	segs    []*segment // oldest first
	w       *os.File   // open on the last segment; nil until an append needs one
	nextNum uint64
	end     uint64   // index the next record gets
	head    spoolPos // first record not yet confirmed
	dirty   bool     // written since the last fsync
	closed  bool
	buf     []byte
}

// openSpool opens (creating if needed) the spool in dir, checks every
// segment left by an earlier run and cuts off torn tails.
func openSpool(dir string, log *slog.Logger, segmentSize int64) (*spool, spoolStats, error) {
	var st spoolStats
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, st, fmt.Errorf("spool dir %s: %w", dir, err)
	}
	lock, err := lockDir(filepath.Join(dir, spoolLockFile))
	if err != nil {
		return nil, st, fmt.Errorf("spool dir %s: %w", dir, err)
	}
	s := &spool{dir: dir, log: log, segmentSize: segmentSize, lock: lock, nextNum: 1}
	nums, err := s.segmentNumbers()
	if err != nil {
		s.unlock()
		return nil, st, err
	}
	for _, num := range nums {
		seg, torn, err := s.recoverSegment(num)
		if err != nil {
			s.unlock()
			return nil, st, err
		}
		if torn {
			st.torn++
		}
		s.nextNum = num + 1
		if seg == nil {
			continue
		}
		seg.first = s.end
		s.end += seg.count
		s.segs = append(s.segs, seg)
	}
	st.records, st.segments = s.end, len(s.segs)
	s.head = s.startPos()
	return s, st, nil
}

func (s *spool) segmentNumbers() ([]uint64, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read spool dir %s: %w", s.dir, err)
	}
	var nums []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), spoolExt)
		if !ok || e.IsDir() {
			continue
		}
		num, err := strconv.ParseUint(name, 10, 64)
		if err != nil || num == 0 {
			s.log.Warn("ignoring a file in the spool dir that is not a segment", "file", e.Name())
			continue
		}
		nums = append(nums, num)
	}
	slices.Sort(nums)
	return nums, nil
}

func (s *spool) path(num uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", num, spoolExt))
}

// recoverSegment counts the complete records of a segment and truncates it
// after the last one. It returns nil for a segment with no record (which it
// deletes) and reports whether something was cut off.
func (s *spool) recoverSegment(num uint64) (*segment, bool, error) {
	path := s.path(num)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, false, fmt.Errorf("open spool segment: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, false, fmt.Errorf("stat spool segment: %w", err)
	}
	seg := &segment{num: num, size: int64(len(spoolMagic))}
	br := bufio.NewReaderSize(f, 256<<10)
	magic := make([]byte, len(spoolMagic))
	n, _ := io.ReadFull(br, magic)
	switch {
	case n == len(magic) && string(magic) == spoolMagic:
	case n < len(magic) && string(magic[:n]) == spoolMagic[:n]:
		// Created, but the crash came before its header was written:
		// no record in it.
		if err := os.Remove(path); err != nil {
			return nil, false, fmt.Errorf("remove empty spool segment: %w", err)
		}
		return nil, false, nil
	default:
		// Not something we wrote: keep it aside for a human.
		bad := path + ".bad"
		s.log.Error("spool segment has no spool header, moved aside", "file", path, "moved_to", bad, "bytes", info.Size())
		if err := os.Rename(path, bad); err != nil {
			return nil, false, fmt.Errorf("move aside bad spool segment: %w", err)
		}
		return nil, true, nil
	}
	var reason string
	for {
		n, err := readRecord(br, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			reason = err.Error()
			break
		}
		seg.size += int64(n)
		seg.count++
	}
	if reason != "" {
		// A crash tore the record being written, or the disk lost a
		// block: what follows cannot be framed, so it is cut off.
		s.log.Warn("spool segment ends in a torn or corrupt record, cut off",
			"file", path, "offset", seg.size, "bytes_dropped", info.Size()-seg.size, "reason", reason, "records_kept", seg.count)
		if err := f.Truncate(seg.size); err != nil {
			return nil, true, fmt.Errorf("truncate spool segment %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return nil, true, fmt.Errorf("sync spool segment %s: %w", path, err)
		}
	}
	if seg.count == 0 {
		if err := os.Remove(path); err != nil {
			return nil, reason != "", fmt.Errorf("remove empty spool segment: %w", err)
		}
		return nil, reason != "", nil
	}
	return seg, reason != "", nil
}

// errTorn marks a record that is incomplete or fails its checks.
var errTorn = errors.New("torn record")

// readRecord reads one record from r into rec (when not nil) and returns
// its size on disk. io.EOF means r ended cleanly between records.
func readRecord(r *bufio.Reader, rec *spoolRecord) (int, error) {
	var hdr [recordHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("%w: short header", errTorn)
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	if n < 4 || n > maxRecordSize {
		return 0, fmt.Errorf("%w: length %d out of range", errTorn, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, fmt.Errorf("%w: short body, want %d bytes", errTorn, n)
	}
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(hdr[4:8]) {
		return 0, fmt.Errorf("%w: checksum mismatch", errTorn)
	}
	out, err := decodeRecord(body)
	if err != nil {
		return 0, err
	}
	if rec != nil {
		*rec = out
	}
	return recordHeaderSize + int(n), nil
}

func decodeRecord(body []byte) (spoolRecord, error) {
	var rec spoolRecord
	field := func() (string, bool) {
		if len(body) < 2 {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(body))
		if len(body) < 2+n {
			return "", false
		}
		s := string(body[2 : 2+n])
		body = body[2+n:]
		return s, true
	}
	var ok bool
	if rec.subject, ok = field(); !ok || rec.subject == "" {
		return rec, fmt.Errorf("%w: bad subject field", errTorn)
	}
	if rec.id, ok = field(); !ok {
		return rec, fmt.Errorf("%w: bad id field", errTorn)
	}
	rec.data = body
	return rec, nil
}

// startPos is the position of the first record the spool holds.
func (s *spool) startPos() spoolPos {
	if len(s.segs) == 0 {
		return spoolPos{seg: s.nextNum, off: int64(len(spoolMagic)), idx: s.end}
	}
	return spoolPos{seg: s.segs[0].num, off: int64(len(spoolMagic)), idx: s.segs[0].first}
}

// append writes one record. When it returns nil the record is in the
// operating system's cache; sync makes it durable.
func (s *spool) append(subject, id string, data []byte) error {
	if len(subject) > 0xffff || len(id) > 0xffff {
		return fmt.Errorf("spool: subject or id longer than 65535 bytes")
	}
	bodyLen := 2 + len(subject) + 2 + len(id) + len(data)
	if bodyLen > maxRecordSize {
		return fmt.Errorf("spool: event of %d bytes exceeds %d", bodyLen, maxRecordSize)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errSpoolClosed
	}
	if s.w == nil || s.segs[len(s.segs)-1].size >= s.segmentSize {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	b := slices.Grow(s.buf[:0], recordHeaderSize+bodyLen)
	b = b[:recordHeaderSize]
	b = binary.BigEndian.AppendUint16(b, uint16(len(subject)))
	b = append(b, subject...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
	b = append(b, id...)
	b = append(b, data...)
	binary.BigEndian.PutUint32(b[0:4], uint32(bodyLen))
	binary.BigEndian.PutUint32(b[4:8], crc32.Checksum(b[recordHeaderSize:], castagnoli))
	if cap(b) <= 1<<20 {
		s.buf = b
	}
	seg := s.segs[len(s.segs)-1]
	if n, err := s.w.Write(b); err != nil {
		// Take back a partial record so the segment stays framed; if
		// that fails too, leave the segment (readers stop at seg.size
		// and the next open cuts the tail) and start a new one.
		if n > 0 {
			if terr := s.w.Truncate(seg.size); terr != nil {
				s.closeWriter()
			}
		}
		return fmt.Errorf("spool write to %s: %w", s.path(seg.num), err)
	}
	seg.size += int64(len(b))
	seg.count++
	s.end++
	s.dirty = true
	return nil
}

// rotate closes the segment being written and starts the next. s.mu held.
func (s *spool) rotate() error {
	s.closeWriter()
	num := s.nextNum
	path := s.path(num)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("create spool segment: %w", err)
	}
	if _, err := f.WriteString(spoolMagic); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write spool segment header %s: %w", path, err)
	}
	// Make the new file's name durable, so a power cut cannot lose the
	// segment's records along with its directory entry.
	if err := syncDir(s.dir); err != nil {
		s.log.Warn("spool dir fsync failed", "dir", s.dir, "err", err)
	}
	s.nextNum++
	s.w = f
	s.segs = append(s.segs, &segment{num: num, size: int64(len(spoolMagic)), first: s.end})
	return nil
}

// closeWriter fsyncs and closes the segment being written. s.mu held.
func (s *spool) closeWriter() {
	if s.w == nil {
		return
	}
	if err := s.w.Sync(); err != nil {
		s.log.Error("spool fsync failed", "file", s.w.Name(), "err", err)
	}
	if err := s.w.Close(); err != nil {
		s.log.Error("spool close failed", "file", s.w.Name(), "err", err)
	}
	s.w = nil
}

// sync fsyncs what was appended since the last sync. The fsync runs
// without the lock so that appends go on meanwhile.
func (s *spool) sync() error {
	s.mu.Lock()
	if !s.dirty || s.w == nil {
		s.mu.Unlock()
		return nil
	}
	f := s.w
	s.dirty = false
	s.mu.Unlock()
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		// Whether the failed pages reach the disk is unknown: try again.
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return fmt.Errorf("spool fsync %s: %w", f.Name(), err)
	}
	return nil
}

// waiting is the number of records not yet confirmed.
func (s *spool) waiting() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end - s.head.idx
}

// headPos is the position of the first record not yet confirmed.
func (s *spool) headPos() spoolPos {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head
}

// atEnd reports whether pos is past the last record appended.
func (s *spool) atEnd(pos spoolPos) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return pos.idx >= s.end
}

// confirm records that every record before pos is in JetStream, and
// deletes the segments that hold nothing else. When everything is
// confirmed all segments go, so an idle spool leaves no file behind.
func (s *spool) confirm(pos spoolPos) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pos.idx <= s.head.idx {
		return
	}
	s.head = pos
	drop := 0
	if pos.idx >= s.end {
		s.closeWriter()
		drop = len(s.segs)
		s.head = spoolPos{seg: s.nextNum, off: int64(len(spoolMagic)), idx: s.end}
	} else {
		// The last segment ends at s.end, so it is never dropped here.
		for drop < len(s.segs) && s.segs[drop].first+s.segs[drop].count <= pos.idx {
			drop++
		}
	}
	for _, seg := range s.segs[:drop] {
		if err := os.Remove(s.path(seg.num)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("remove replayed spool segment", "file", s.path(seg.num), "err", err)
		}
	}
	s.segs = slices.Delete(s.segs, 0, drop)
}

// close fsyncs and closes the spool; the records not yet confirmed stay
// on disk for the next open.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.w != nil {
		if serr := s.w.Sync(); serr != nil {
			err = fmt.Errorf("spool fsync %s: %w", s.w.Name(), serr)
		}
		s.w.Close()
		s.w = nil
	}
	s.unlock()
	return err
}

func (s *spool) unlock() {
	if s.lock != nil {
		unlockDir(s.lock)
		s.lock = nil
	}
}

// spoolReader reads records in order from a position, following new
// appends and segment rotation. One goroutine uses it.
type spoolReader struct {
	s     *spool
	pos   spoolPos // next record
	f     *os.File
	br    *bufio.Reader
	limit int64 // readable bytes of the open segment
}

func (s *spool) reader(from spoolPos) *spoolReader {
	return &spoolReader{s: s, pos: from}
}

// next returns the next record and its position, or ok false when every
// record appended so far has been read.
func (r *spoolReader) next() (rec spoolRecord, at spoolPos, ok bool, err error) {
	for r.f == nil || r.pos.off >= r.limit {
		size, next, found := r.s.segmentState(r.pos.seg)
		switch {
		case found && r.pos.off < size:
			r.limit = size
			if r.f == nil {
				if err := r.open(); err != nil {
					return rec, at, false, err
				}
			}
		case next != nil:
			// This segment is read (or was deleted once confirmed):
			// go on with the next one.
			r.closeFile()
			r.pos = spoolPos{seg: next.num, off: int64(len(spoolMagic)), idx: next.first}
		default:
			return rec, at, false, nil
		}
	}
	at = r.pos
	n, err := readRecord(r.br, &rec)
	if err != nil {
		if err == io.EOF || errors.Is(err, errTorn) {
			err = fmt.Errorf("%w: %s at offset %d: %v", ErrSpoolCorrupt, r.s.path(r.pos.seg), r.pos.off, err)
		}
		return rec, at, false, err
	}
	r.pos.off += int64(n)
	r.pos.idx++
	return rec, at, true, nil
}

func (r *spoolReader) open() error {
	f, err := os.Open(r.s.path(r.pos.seg))
	if err != nil {
		return fmt.Errorf("open spool segment: %w", err)
	}
	if _, err := f.Seek(r.pos.off, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("seek spool segment %s: %w", f.Name(), err)
	}
	r.f = f
	r.br = bufio.NewReaderSize(f, 256<<10)
	return nil
}

func (r *spoolReader) closeFile() {
	if r.f != nil {
		r.f.Close()
		r.f, r.br, r.limit = nil, nil, 0
	}
}

func (r *spoolReader) close() { r.closeFile() }

// segmentState returns the size of segment num (found false if it is
// gone) and the first segment after it, if any.
func (s *spool) segmentState(num uint64) (size int64, next *segment, found bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, seg := range s.segs {
		switch {
		case seg.num == num:
			size, found = seg.size, true
		case seg.num > num:
			c := *seg
			return size, &c, found
		}
	}
	return size, nil, found
}
