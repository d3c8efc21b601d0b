package cdrgen

import (
	"net/url"
	"strings"
)

// userPart is the user of a SIP, SIPS or tel URI as received:
// "sip:+4930123@gw;user=phone" gives "+4930123", "tel:+1-212-555-0100;
// phone-context=x" gives "+1-212-555-0100". A display name and angle
// brackets around the URI are tolerated; a URI without a user gives "".
func userPart(uri string) string {
	s := strings.TrimSpace(uri)
	if i := strings.IndexByte(s, '<'); i >= 0 {
		s = s[i+1:]
		if j := strings.IndexByte(s, '>'); j >= 0 {
			s = s[:j]
		}
	}
	scheme, rest, ok := strings.Cut(s, ":")
	switch {
	case ok && strings.EqualFold(scheme, "tel"):
		s = rest
	case ok && (strings.EqualFold(scheme, "sip") || strings.EqualFold(scheme, "sips")):
		user, _, hasUser := strings.Cut(rest, "@")
		if !hasUser {
			return ""
		}
		// Drop a password ("user:secret@host").
		s, _, _ = strings.Cut(user, ":")
	default:
		if user, _, hasUser := strings.Cut(s, "@"); hasUser {
			s = user
		}
	}
	// User parameters (";npdi", ";phone-context=...") are not the number.
	s, _, _ = strings.Cut(s, ";")
	if u, err := url.PathUnescape(s); err == nil {
		s = u
	}
	return s
}

// e164 is a user part in E.164 digits without '+' when it looks like an
// international number written with '+' or '00', or like plain digits;
// otherwise "". Visual separators of tel URIs ("-", ".", "(", ")", " ") are
// dropped. National formats need the customer's dial plan, which this does
// not know: "030123" stays "030123".
func e164(user string) string {
	s := strings.Map(func(r rune) rune {
		switch r {
		case '-', '.', '(', ')', ' ':
			return -1
		}
		return r
	}, user)
	if rest, ok := strings.CutPrefix(s, "+"); ok {
		s = rest
	} else if rest, ok := strings.CutPrefix(s, "00"); ok {
		s = rest
	}
	// E.164 numbers have at most 15 digits.
	if s == "" || len(s) > 15 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return ""
		}
	}
	return s
}
