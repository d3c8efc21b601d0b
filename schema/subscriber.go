package schema

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// KindSubscriber is a SIP user under one of our domains, who registers
// phones and places calls with digest authentication.
const KindSubscriber Kind = "subscriber"

// BucketRegistrations is the JetStream KV bucket of the registrar: one key
// per subscriber id holding that subscriber's bindings (schema.Registration).
// Every proxy reads and writes it, so a phone registered through one proxy
// is reached through any other, and bindings survive a restart.
const BucketRegistrations = "REGISTRATIONS"

// RegistrationsBucket is the definition of the registrations bucket. Each
// write replaces a subscriber's whole binding list under optimistic
// concurrency; one revision of history is all the registrar needs.
func RegistrationsBucket(o StreamOptions) jetstream.KeyValueConfig {
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	return jetstream.KeyValueConfig{
		Bucket:      BucketRegistrations,
		Description: "registrar bindings (contacts) of the subscribers, shared by the proxies",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}
}

// Contact limits of a subscriber.
const (
	// DefaultMaxContacts is a subscriber's limit when it names none.
	DefaultMaxContacts = 5
	// MaxMaxContacts bounds what an operator may set: every binding is
	// forked to on a call.
	MaxMaxContacts = 32
)

// Subscriber is a SIP user user@domain of an account. It authenticates
// with digest (RFC 7616/8760) against the HA1 hashes kept here, never the
// password itself: HA1 = H(user ":" domain ":" password), the domain
// being the realm.
type Subscriber struct {
	ID      string `json:"id"`
	Name    string `json:"name,omitempty"`
	User    string `json:"user"`
	Domain  string `json:"domain"`
	Account string `json:"account"`
	// HA1MD5 and HA1SHA256 are the lower-case hex HA1 for the MD5 and
	// SHA-256 algorithms; at least one. The proxy offers only the
	// algorithms it has a hash for.
	HA1MD5    string `json:"ha1_md5,omitempty"`
	HA1SHA256 string `json:"ha1_sha256,omitempty"`
	// MaxContacts bounds the subscriber's simultaneous bindings; 0 is
	// DefaultMaxContacts.
	MaxContacts int `json:"max_contacts,omitempty"`
}

func (s Subscriber) ObjectKind() Kind { return KindSubscriber }
func (s Subscriber) ObjectID() string { return s.ID }

// AOR is the subscriber's address of record, user@domain.
func (s Subscriber) AOR() string { return s.User + "@" + s.Domain }

// MaxContactsOrDefault is the subscriber's binding limit.
func (s Subscriber) MaxContactsOrDefault() int {
	if s.MaxContacts == 0 {
		return DefaultMaxContacts
	}
	return s.MaxContacts
}

var (
	// validSIPUser: the user part of a SIP URI without escapes, and no ':'
	// (HA1 joins user, realm and password with ':').
	validSIPUser = regexp.MustCompile(`^[A-Za-z0-9+][A-Za-z0-9._+!~*'()&=$,;?/-]{0,63}$`)
	validDomain  = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	validMD5     = regexp.MustCompile(`^[0-9a-f]{32}$`)
	validSHA256  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Validate checks the subscriber on its own; CheckSubscriber checks it
// against the others.
func (s Subscriber) Validate() error {
	if err := checkID(KindSubscriber, s.ID); err != nil {
		return err
	}
	if !validSIPUser.MatchString(s.User) {
		return fmt.Errorf("subscriber %s: user %q: want 1 to 64 characters of a SIP user part (letters, digits, '+', '.', '-', '_' ...; no ':' or '@'): %w", s.ID, s.User, ErrInvalidObject)
	}
	if len(s.Domain) > 253 || !validDomain.MatchString(s.Domain) {
		return fmt.Errorf("subscriber %s: domain %q: want a lower-case host name such as sip.example.com: %w", s.ID, s.Domain, ErrInvalidObject)
	}
	if !validID.MatchString(s.Account) {
		return fmt.Errorf("subscriber %s: account %q: want an account id: %w", s.ID, s.Account, ErrInvalidObject)
	}
	if s.HA1MD5 == "" && s.HA1SHA256 == "" {
		return fmt.Errorf("subscriber %s: no HA1: give a password or the MD5 and/or SHA-256 HA1: %w", s.ID, ErrInvalidObject)
	}
	if s.HA1MD5 != "" && !validMD5.MatchString(s.HA1MD5) {
		return fmt.Errorf("subscriber %s: ha1_md5: want 32 lower-case hex digits: %w", s.ID, ErrInvalidObject)
	}
	if s.HA1SHA256 != "" && !validSHA256.MatchString(s.HA1SHA256) {
		return fmt.Errorf("subscriber %s: ha1_sha256: want 64 lower-case hex digits: %w", s.ID, ErrInvalidObject)
	}
	if s.MaxContacts < 0 || s.MaxContacts > MaxMaxContacts {
		return fmt.Errorf("subscriber %s: max contacts %d: want 0 (default %d) to %d: %w", s.ID, s.MaxContacts, DefaultMaxContacts, MaxMaxContacts, ErrInvalidObject)
	}
	return nil
}

// SetPassword stores the HA1 hashes of password for both algorithms. It
// needs User and Domain set, as both are part of the hash.
func (s *Subscriber) SetPassword(password string) error {
	if password == "" {
		return fmt.Errorf("subscriber %s: empty password: %w", s.ID, ErrInvalidObject)
	}
	if s.User == "" || s.Domain == "" {
		return errors.New("set the subscriber's user and domain before its password")
	}
	s.HA1MD5, s.HA1SHA256 = HA1MD5(s.User, s.Domain, password), HA1SHA256(s.User, s.Domain, password)
	return nil
}

// HA1MD5 is the MD5 digest HA1 of a user in a realm.
func HA1MD5(user, realm, password string) string {
	h := md5.Sum([]byte(user + ":" + realm + ":" + password))
	return hex.EncodeToString(h[:])
}

// HA1SHA256 is the SHA-256 digest HA1 of a user in a realm.
func HA1SHA256(user, realm, password string) string {
	h := sha256.Sum256([]byte(user + ":" + realm + ":" + password))
	return hex.EncodeToString(h[:])
}

// ParseAOR splits user@domain, lower-casing the domain.
func ParseAOR(v string) (user, domain string, err error) {
	v = strings.TrimPrefix(strings.TrimPrefix(v, "sip:"), "sips:")
	user, domain, ok := strings.Cut(v, "@")
	if !ok || user == "" || domain == "" {
		return "", "", fmt.Errorf("%q: want user@domain: %w", v, ErrInvalidObject)
	}
	return user, strings.ToLower(domain), nil
}

// SubscriberID is the id a subscriber gets when the operator names none:
// user and domain joined by '_', every character an id cannot hold turned
// into '-'. Two addresses can map to one id; CheckSubscriber then refuses
// the second, and the operator names it.
func SubscriberID(user, domain string) string {
	b := []byte(user + "_" + domain)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b)
}

// CheckSubscriber validates s as it would stand in p: its account exists
// and no other subscriber has its address.
func (p *Provisioning) CheckSubscriber(s Subscriber) error {
	if err := s.Validate(); err != nil {
		return err
	}
	var errs []error
	if _, ok := p.Accounts[s.Account]; !ok {
		errs = append(errs, fmt.Errorf("subscriber %s: account %q does not exist: %w", s.ID, s.Account, ErrInvalidObject))
	}
	for _, id := range SortedIDs(p.Subscribers) {
		if o := p.Subscribers[id]; id != s.ID && o.User == s.User && o.Domain == s.Domain {
			errs = append(errs, fmt.Errorf("subscriber %s: %s is subscriber %s's already: %w", s.ID, s.AOR(), id, ErrInvalidObject))
		}
	}
	return errors.Join(errs...)
}

// Registration is what the registrar keeps of one subscriber: its
// bindings, stored as one JSON value under the subscriber's id in
// BucketRegistrations.
type Registration struct {
	Subscriber string    `json:"subscriber"`
	AOR        string    `json:"aor"`
	Bindings   []Binding `json:"bindings"`
}

// Binding is one registered contact of a subscriber.
type Binding struct {
	// Contact is the Contact URI the phone registered; calls carry it as
	// their Request-URI.
	Contact string `json:"contact"`
	// Received is the source address (ip:port) the REGISTER came from when
	// the phone is behind NAT or asked for rport (RFC 3581); requests go
	// there instead of to the Contact's host. Empty: send to the Contact.
	Received string `json:"received,omitempty"`
	// Transport is the transport the REGISTER came over (udp, tcp).
	Transport string `json:"transport"`
	// ExpiresAt is when the binding lapses, ms since the epoch.
	ExpiresAt int64 `json:"expires_at"`
	// CallID and CSeq order the REGISTERs of one phone (RFC 3261 10.3).
	CallID string `json:"call_id"`
	CSeq   uint32 `json:"cseq"`
	// Q is the contact's q value, 0 to 1000 (thousandths); 0 when absent.
	Q int `json:"q,omitempty"`
	// Node is the proxy that took the REGISTER, and UpdatedAt when.
	Node      string `json:"node,omitempty"`
	UpdatedAt int64  `json:"updated_at"`
}
