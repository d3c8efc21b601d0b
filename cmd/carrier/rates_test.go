package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/rating"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// runRates runs one short carrier command in-process and returns its output.
func runRates(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	root := newRootCmd(&out, &out, nil)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func TestRatesImportLookupQuote(t *testing.T) {
	n := testkit.StartNATS(t)
	deck := filepath.Join("..", "..", "rating", "testdata", "golden_deck.csv")
	bands := filepath.Join("..", "..", "rating", "testdata", "golden_timetable.csv")
	plan := []string{"--nats-url", n.URL}

	out, err := runRates(t, append([]string{"rates", "import", deck, "--plan", "retail", "--timetable", bands, "--zone", "Europe/Berlin"}, plan...)...)
	if err != nil || !strings.Contains(out, "plan retail version 1: 17 rates, 14 prefixes") {
		t.Fatalf("import: %v\n%s", err, out)
	}

	// A bad file is refused with its line numbers and changes nothing.
	bad := filepath.Join(t.TempDir(), "bad.csv")
	if err := os.WriteFile(bad, []byte("prefix,destination,rate,first_increment,next_increment\n44,UK,0.01,60,60\n44,UK,0.02,60,60\n45,DK,-1,60,60\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = runRates(t, append([]string{"rates", "import", bad, "--plan", "retail"}, plan...)...)
	if err == nil || !strings.Contains(err.Error(), "line 3: prefix: prefix 44 band \"\" also on line 2: duplicate prefix") ||
		!strings.Contains(err.Error(), "line 4: rate: -1: negative price") || !strings.Contains(err.Error(), "nothing was imported") {
		t.Fatalf("bad import: %v", err)
	}

	out, err = runRates(t, append([]string{"rates", "list", "-o", "json"}, plan...)...)
	var plans []rating.PlanInfo
	if err != nil || json.Unmarshal([]byte(out), &plans) != nil || len(plans) != 1 || plans[0].Version != 1 || plans[0].Zone != "Europe/Berlin" {
		t.Fatalf("list: %v\n%s", err, out)
	}

	// A version scheduled for 2027 leaves 2026 quotes on version 1.
	next := filepath.Join(t.TempDir(), "next.csv")
	if err := os.WriteFile(next, []byte("prefix,destination,rate,first_increment,next_increment\n4930,Berlin,0.6,1,1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runRates(t, append([]string{"rates", "import", next, "--plan", "retail", "--effective", "2027-01-01"}, plan...)...)
	if err != nil || !strings.Contains(out, "plan retail version 2: 1 rates") {
		t.Fatalf("scheduled import: %v\n%s", err, out)
	}
	out, err = runRates(t, append([]string{"rates", "quote", "4930", "60", "--plan", "retail", "--at", "2027-01-01T00:00:00Z"}, plan...)...)
	if err != nil || !strings.Contains(out, "plan retail version 2") || !strings.Contains(out, "total 0.6000") {
		t.Fatalf("quote after the switch: %v\n%s", err, out)
	}
	out, err = runRates(t, append([]string{"rates", "list"}, plan...)...)
	if err != nil || !strings.Contains(out, "2027-01-01 00:00:00") {
		t.Fatalf("list: %v\n%s", err, out)
	}

	out, err = runRates(t, append([]string{"rates", "lookup", "+4980123", "--plan", "retail", "--at", "2026-05-31T21:59:59Z"}, plan...)...)
	if err != nil || !strings.Contains(out, "4980") || !strings.Contains(out, "0.06") {
		t.Fatalf("lookup before the change: %v\n%s", err, out)
	}

	// Golden G47 through the CLI: 16 hours across three bands.
	out, err = runRates(t, append([]string{"rates", "quote", "49701", "16h", "--plan", "retail", "--at", "2026-11-23T16:00:00Z", "-o", "json"}, plan...)...)
	var q rating.Quote
	if err != nil || json.Unmarshal([]byte(out), &q) != nil {
		t.Fatalf("quote: %v\n%s", err, out)
	}
	if q.Billed != 57600 || q.Total != schema.MustParseMoney("36") || len(q.Segments) != 3 || q.Rounding.Mode != schema.RoundUp {
		t.Fatalf("quote = %+v", q)
	}
	out, err = runRates(t, append([]string{"rates", "quote", "4930", "37", "--plan", "retail", "--at", "2026-11-23T20:00:00Z"}, plan...)...)
	if err != nil || !strings.Contains(out, "plan retail version 1") || !strings.Contains(out, "billed 42 s (increments 30/6") || !strings.Contains(out, "total 0.0840") {
		t.Fatalf("quote table: %v\n%s", err, out)
	}

	out, err = runRates(t, append([]string{"rates", "show", "retail"}, plan...)...)
	if err != nil || !strings.Contains(out, "VERSION") || !strings.HasPrefix(strings.Split(out, "\n")[1], "2 ") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	exported := filepath.Join(t.TempDir(), "v1.csv")
	if _, err := runRates(t, append([]string{"rates", "export", "retail", "--version", "1", "--file", exported}, plan...)...); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(exported); len(got) == 0 || !strings.Contains(string(got), "4970,G band peak,0.09") {
		t.Fatalf("export:\n%s", got)
	}
	out, err = runRates(t, append([]string{"rates", "delete", "retail"}, plan...)...)
	if err != nil || !strings.Contains(out, "plan retail deleted") {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if _, err := runRates(t, append([]string{"rates", "show", "retail"}, plan...)...); err == nil || !strings.Contains(err.Error(), "unknown rate plan") {
		t.Fatalf("show after delete: %v", err)
	}

	// Without a plan or deck the command says what to give.
	if _, err := runRates(t, "rates", "quote", "4930", "37"); err == nil || !strings.Contains(err.Error(), "--plan") {
		t.Fatalf("no source: %v", err)
	}
	if _, err := runRates(t, append([]string{"rates", "quote", "4930", "soon", "--plan", "retail"}, plan...)...); err == nil || !strings.Contains(err.Error(), "1m30s") {
		t.Fatalf("bad duration: %v", err)
	}
	if _, err := runRates(t, append([]string{"rates", "lookup", "4930", "--plan", "nope"}, plan...)...); err == nil || !strings.Contains(err.Error(), "unknown rate plan") {
		t.Fatalf("unknown plan: %v", err)
	}
}

func TestRatesQuoteLocalDeck(t *testing.T) {
	deck := filepath.Join("..", "..", "rating", "testdata", "golden_deck.csv")
	bands := filepath.Join("..", "..", "rating", "testdata", "golden_timetable.csv")
	if _, err := runRates(t, "rates", "quote", "4911555", "61", "--deck", deck); err == nil || !strings.Contains(err.Error(), `line 11: band: "peak" is not in the timetable (it defines none)`) {
		t.Fatalf("deck with bands but no timetable: %v", err)
	}
	out, err := runRates(t, "rates", "quote", "4911555", "61", "--deck", deck, "--timetable", bands, "--zone", "Europe/Berlin", "--decimals", "2", "--rounding", "half-up", "-o", "csv")
	if err != nil || !strings.HasPrefix(out, "FROM S,SECONDS,BAND,PREFIX,RATE/MIN,TIER,CHARGE\n0,61,default,4911,0.0123,,0.012505\n") {
		t.Fatalf("local quote: %v\n%s", err, out)
	}
	if _, err := runRates(t, "rates", "quote", "4911555", "61", "--deck", deck, "--rounding", "sideways"); err == nil || !strings.Contains(err.Error(), "--rounding") {
		t.Fatalf("bad rounding: %v", err)
	}
}
