// Package rating prices calls: exact money, rate decks, a longest-prefix
// index with effective dates and time bands, quotes and authorization.
//
// # Money
//
// Money is schema.Money, an int64 of nano-units (10⁻⁹ of the currency
// unit). Amounts are parsed from and printed as decimal strings; no float
// is used.
//
// # Deck file
//
// CSV with a header row; columns in any order, names as below.
//
//	prefix           digits, 1-16, no "+" (required)
//	destination      name shown on quotes and CDRs (required)
//	rate             price per minute, decimal, >= 0, up to 9 decimals (required)
//	first_increment  seconds billed for the first block, 1-86400 (required)
//	next_increment   seconds of every following block, 1-86400 (required)
//	connect_fee      charged once per answered call (default 0)
//	min_duration     a shorter call is billed this many seconds (default 0)
//	band             time band from the timetable; empty: any time
//	tier_after       seconds after which tier_rate applies (with tier_rate)
//	tier_rate        price per minute from tier_after on
//	effective_from   YYYY-MM-DD (midnight in the timetable zone) or RFC 3339, inclusive
//	effective_to     same, exclusive; empty: open-ended
//
// A file is accepted whole or rejected whole (*DeckError, line numbers).
// Two rows of one prefix and band must not overlap in effective dates.
//
// # Which rate
//
// A call is rated with the deck rows effective at its answer time for
// the whole call: a call answered one second before a price change pays
// the old price to its end. The rate is the longest prefix of the number
// that has a row in force then, for the band in force, or else its
// default-band row (empty band). The connection fee, increments and
// minimum duration are those of the rate at answer; when the band
// changes during the call only the per-minute price follows it.
//
// # Rounding, in order
//
//  1. Seconds: the duration is rounded up to whole seconds (a started
//     second is a billed second).
//  2. Increments: a call of 0 s (answered, no second carried) bills 0 s
//     and pays only the connection fee. Otherwise the first increment is
//     billed whole, the rest is rounded up to whole next increments, and
//     the result is raised to min_duration.
//  3. Segments: billed seconds are split where the band changes (billed
//     second k belongs to the band in force at answer+k, k from 0) and
//     where a tier starts (second k >= tier_after pays tier_rate). Each
//     segment costs rate·seconds/60, rounded up to the nano-unit.
//  4. Call: connection fee + segment charges is the exact charge, then
//     rounded once per call to the deck's Rounding (default 4 decimals,
//     up). Money is never rounded per increment, so a long call carries
//     no accumulated rounding error.
//
// # Plans and versions
//
// A Store keeps each plan's deck files in the RATE_DECKS object store and
// its versions in the RATE_PLANS KV bucket (one revision per import). An
// import is validated whole before it is published. A version with an
// effective time takes over then; one without is in force at once and for
// any time, so a corrected deck reprices past calls when they are rerated.
// A Book follows the bucket so running processes switch without a restart.
//
// Arithmetic is checked: a price that does not fit in a Money is
// schema.ErrOverflow, never a wrapped number.
package rating
