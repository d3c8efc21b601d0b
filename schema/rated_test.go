package schema

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestRatedIDAndSubject(t *testing.T) {
	cdr := CDRID("call-1", "tag")
	if RatedID(cdr, 0) != RatedID(cdr, 0) {
		t.Error("RatedID is not deterministic")
	}
	ids := map[string]bool{RatedID(cdr, 0): true, RatedID(cdr, 1): true, RatedID(CDRID("call-2", "tag"), 0): true, cdr: true, StartedID(cdr): true}
	if len(ids) != 5 {
		t.Errorf("ids collide: %v", ids)
	}
	ended, rated := CDRSubject(TypeCallEnded, "call-1"), RatedSubject("call-1")
	if strings.TrimPrefix(ended, "cdr.ended.") != strings.TrimPrefix(rated, "cdr.rated.") || !strings.HasPrefix(rated, "cdr.rated.") {
		t.Errorf("rated subject %s not on the partition of %s", rated, ended)
	}
}

// Amounts travel as strings, so that no JSON reader takes them for floats.
func TestRatedCDRAmountsAreStrings(t *testing.T) {
	b, err := json.Marshal(RatedCDR{Status: StatusRated, SellCost: "0.0697", BuyCost: "0.0122", Margin: "0.0575", Sell: &RatedLeg{Rate: "0.0123", Cost: "0.0697"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"sell_cost":"0.0697"`, `"margin":"0.0575"`, `"rate":"0.0123"`, `"status":"rated"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s not in %s", want, b)
		}
	}
}
