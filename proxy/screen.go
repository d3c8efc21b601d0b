package proxy

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
)

// Notes say why the proxy answered a request itself (schema.Transaction.Note).
const (
	noteMalformed     = "malformed"
	noteTooLarge      = "too_large"
	noteMaxForwards   = "max_forwards"
	noteUnreachable   = "unreachable"
	noteTimeout       = "timeout"
	noteNoRoute       = "no_route"
	noteNoTransaction = "no_transaction"
	noteShutdown      = "shutdown"
	noteUpstreamLost  = "upstream_lost"
	noteLateAnswer    = "late_answer"
)

var (
	errNoVia         = errors.New("no Via")
	errNoFrom        = errors.New("no From")
	errNoTo          = errors.New("no To")
	errNoCallID      = errors.New("no Call-ID")
	errNoCSeq        = errors.New("no CSeq")
	errCSeqMethod    = errors.New("CSeq method differs from the request method")
	errUnknownFormat = errors.New("not a SIP message")
)

// admit screens one received message before sipgo sees it. sipgo drops what
// it cannot parse without a word (and logs the payload); parsing here first
// lets the proxy answer 400 or 413 where RFC 3261 wants it. true hands the
// message on; false means it was answered or dropped.
func (p *Proxy) admit(data []byte, limit int, l *listener, src net.Addr, local string, w replier) bool {
	if len(data) > limit {
		p.reject(data, 413, "Request Entity Too Large", noteTooLarge, "message over the size limit", l, src, local, w)
		return false
	}
	msg, err := p.screen.ParseSIP(data)
	if err == nil {
		err = incomplete(msg)
	}
	if err == nil {
		return true
	}
	p.reject(data, 400, "Bad Request", noteMalformed, err.Error(), l, src, local, w)
	return false
}

// incomplete reports a parsed message that lacks what the transaction
// layer and the proxy need (RFC 3261 8.1.1, 16.3).
func incomplete(msg sip.Message) error {
	switch m := msg.(type) {
	case *sip.Request:
		switch {
		case m.Via() == nil:
			return errNoVia
		case m.From() == nil:
			return errNoFrom
		case m.To() == nil:
			return errNoTo
		case m.CallID() == nil:
			return errNoCallID
		case m.CSeq() == nil:
			return errNoCSeq
		case m.CSeq().MethodName != m.Method:
			return errCSeqMethod
		}
	case *sip.Response:
		switch {
		case m.Via() == nil:
			return errNoVia
		case m.CSeq() == nil:
			return errNoCSeq
		}
	default:
		return errUnknownFormat
	}
	return nil
}

// reject answers a message that never reached sipgo with code when the
// raw bytes allow a reply, and drops it otherwise. Answered requests get a
// transaction event like any other.
func (p *Proxy) reject(data []byte, code int, reason, note, cause string, l *listener, src net.Addr, local string, w replier) {
	p.m.malformed.Inc()
	r := scanRaw(data)
	if !r.replyable() {
		p.log.Debug("dropped malformed SIP message", "src", src, "transport", l.network, "bytes", len(data), "cause", cause)
		return
	}
	now := time.Now()
	toTag := r.toTag()
	if len(toTag) == 0 {
		toTag = []byte(p.newTag())
	}
	w.reply(r.reply(code, reason, toTag), src)
	p.log.Debug("answered malformed SIP request", "src", src, "transport", l.network, "code", code, "cause", cause)
	if local == "" {
		local = l.local
	}
	tx := r.transaction(code, reason, note, toTag)
	tx.Source, tx.Local, tx.Transport = src.String(), local, l.network
	tx.RequestAt, tx.FinalAt = schema.Millis(now), schema.Millis(now)
	p.publish(&tx, now)
}

// rawMsg locates, without parsing them, the parts of a message needed to
// answer it: the start line and the Via, From, To, Call-ID and CSeq header
// lines (RFC 3261 8.2.6.1).
type rawMsg struct {
	data    []byte
	request bool
	method  []byte
	ruri    []byte
	vias    []span
	from    span
	to      span
	callID  span
	cseq    span
}

// span is a header line (with its continuation lines) in rawMsg.data.
type span struct{ a, b int }

func (s span) ok() bool { return s.b > s.a }

func scanRaw(data []byte) rawMsg {
	r := rawMsg{data: data}
	line, pos, ok := rawLine(data, 0)
	if !ok {
		return r
	}
	r.startLine(data[line.a:line.b])
	var last *span
	for pos < len(data) {
		var l span
		l, pos, ok = rawLine(data, pos)
		if !ok || l.a == l.b {
			break
		}
		if c := data[l.a]; c == ' ' || c == '\t' {
			if last != nil {
				last.b = l.b
			}
			continue
		}
		last = nil
		text := data[l.a:l.b]
		colon := bytes.IndexByte(text, ':')
		if colon < 0 {
			continue
		}
		var field *span
		switch name := bytes.TrimSpace(text[:colon]); {
		case eqFold(name, "via", "v"):
			r.vias = append(r.vias, l)
			last = &r.vias[len(r.vias)-1]
			continue
		case eqFold(name, "from", "f"):
			field = &r.from
		case eqFold(name, "to", "t"):
			field = &r.to
		case eqFold(name, "call-id", "i"):
			field = &r.callID
		case eqFold(name, "cseq", ""):
			field = &r.cseq
		default:
			continue
		}
		if !field.ok() {
			*field = l
			last = field
		}
	}
	return r
}

func eqFold(b []byte, long, short string) bool {
	return bytes.EqualFold(b, []byte(long)) || (short != "" && bytes.EqualFold(b, []byte(short)))
}

// rawLine returns the line starting at pos without its line ending, and
// where the next line starts; false when the line is not terminated.
func rawLine(data []byte, pos int) (span, int, bool) {
	i := bytes.IndexByte(data[pos:], '\n')
	if i < 0 {
		return span{}, len(data), false
	}
	end := pos + i
	next := end + 1
	if end > pos && data[end-1] == '\r' {
		end--
	}
	return span{pos, end}, next, true
}

func (r *rawMsg) startLine(line []byte) {
	method, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return
	}
	ruri, version, ok := bytes.Cut(rest, []byte(" "))
	if !ok || !bytes.EqualFold(bytes.TrimSpace(version), []byte("SIP/2.0")) || len(ruri) == 0 || !isToken(method) {
		return
	}
	r.request, r.method, r.ruri = true, method, ruri
}

func isToken(b []byte) bool {
	if len(b) == 0 || len(b) > 32 {
		return false
	}
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case bytes.IndexByte([]byte("-.!%*_+`'~"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// replyable: a request, not an ACK (never answered), with what the sender
// matches a response to its transaction by: Via and CSeq (RFC 3261
// 17.1.3). From, To and Call-ID are copied when present.
func (r *rawMsg) replyable() bool {
	return r.request && !bytes.Equal(r.method, []byte("ACK")) && len(r.vias) > 0 && r.cseq.ok()
}

func (r *rawMsg) value(s span) []byte {
	line := r.data[s.a:s.b]
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		return bytes.TrimSpace(line[i+1:])
	}
	return nil
}

func (r *rawMsg) toTag() []byte {
	_, tag := addrParts(r.value(r.to))
	return tag
}

// reply builds the response from the request's own header lines.
func (r *rawMsg) reply(code int, reason string, toTag []byte) []byte {
	b := make([]byte, 0, 512)
	b = append(b, "SIP/2.0 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, reason...)
	b = append(b, "\r\n"...)
	for _, v := range r.vias {
		b = append(append(b, r.data[v.a:v.b]...), "\r\n"...)
	}
	if r.from.ok() {
		b = append(append(b, r.data[r.from.a:r.from.b]...), "\r\n"...)
	}
	if r.to.ok() {
		b = append(b, r.data[r.to.a:r.to.b]...)
		if _, tag := addrParts(r.value(r.to)); len(tag) == 0 {
			b = append(append(b, ";tag="...), toTag...)
		}
		b = append(b, "\r\n"...)
	}
	if r.callID.ok() {
		b = append(append(b, r.data[r.callID.a:r.callID.b]...), "\r\n"...)
	}
	b = append(append(b, r.data[r.cseq.a:r.cseq.b]...), "\r\n"...)
	return append(b, "Content-Length: 0\r\n\r\n"...)
}

// transaction is the event of a request answered from its raw bytes.
func (r *rawMsg) transaction(code int, reason, note string, toTag []byte) schema.Transaction {
	fromURI, fromTag := addrParts(r.value(r.from))
	toURI, reqToTag := addrParts(r.value(r.to))
	tx := schema.Transaction{
		Method:     string(r.method),
		CallID:     string(r.value(r.callID)),
		FromURI:    string(fromURI),
		FromTag:    string(fromTag),
		ToURI:      string(toURI),
		ToTag:      string(toTag),
		RequestURI: string(r.ruri),
		InDialog:   len(reqToTag) > 0,
		Status:     code,
		Reason:     reason,
		Note:       note,
	}
	cseq := r.value(r.cseq)
	var n uint64
	for _, d := range cseq {
		if d < '0' || d > '9' || n > 1<<32 {
			break
		}
		n = n*10 + uint64(d-'0')
	}
	if n <= 1<<32-1 {
		tx.CSeq = uint32(n)
	}
	return tx
}

// addrParts splits a name-addr or addr-spec header value into its URI and
// its tag parameter.
func addrParts(v []byte) (uri, tag []byte) {
	var params []byte
	if i := bytes.IndexByte(v, '<'); i >= 0 {
		rest := v[i+1:]
		if j := bytes.IndexByte(rest, '>'); j >= 0 {
			uri, params = rest[:j], rest[j+1:]
		} else {
			uri = rest
		}
	} else if k := bytes.IndexByte(v, ';'); k >= 0 {
		uri, params = bytes.TrimSpace(v[:k]), v[k:]
	} else {
		uri = bytes.TrimSpace(v)
	}
	for len(params) > 0 {
		var p []byte
		p, params, _ = bytes.Cut(params, []byte(";"))
		name, val, _ := bytes.Cut(p, []byte("="))
		if bytes.EqualFold(bytes.TrimSpace(name), []byte("tag")) {
			return uri, bytes.TrimSpace(val)
		}
	}
	return uri, nil
}
