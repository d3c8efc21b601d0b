package analytics

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	got, err := splitStatements(`-- a comment; not the end
CREATE TABLE a (x UInt8)
ENGINE = Memory;

-- another
CREATE TABLE b (s String DEFAULT 'a;b') ENGINE = Memory;
`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"CREATE TABLE a (x UInt8)\nENGINE = Memory", "CREATE TABLE b (s String DEFAULT 'a;b') ENGINE = Memory"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q", got)
	}
	if _, err := splitStatements("CREATE TABLE a (x UInt8) ENGINE = Memory"); err == nil {
		t.Fatal("statement without ';' accepted")
	}
	if _, err := splitStatements("-- only a comment\n"); err == nil {
		t.Fatal("file without statements accepted")
	}
}

func TestEmbeddedMigrationsParse(t *testing.T) {
	boot, migs, err := loadMigrations("somedb")
	if err != nil {
		t.Fatal(err)
	}
	if len(boot) != 1 || !strings.Contains(boot[0], "somedb.schema_migrations") {
		t.Fatalf("bootstrap %q", boot)
	}
	for i, m := range migs {
		if m.version != uint32(i+1) {
			t.Fatalf("migration %s has version %d at position %d: numbers must run 1, 2, 3...", m.name, m.version, i)
		}
		for _, s := range m.statements {
			if strings.Contains(s, "{database}") {
				t.Fatalf("%s: placeholder left in %q", m.name, s)
			}
		}
	}
}

// TestColumnsExistInDDL checks the Go column lists against the DDL (the
// CREATE TABLE or a later ALTER ... ADD COLUMN) without a server; the
// ClickHouse tests check types and values.
func TestColumnsExistInDDL(t *testing.T) {
	_, migs, err := loadMigrations("db")
	if err != nil {
		t.Fatal(err)
	}
	var ddl strings.Builder
	var alters []string
	for _, m := range migs {
		ddl.WriteString(strings.Join(m.statements, "\n"))
		for _, s := range m.statements {
			if strings.HasPrefix(s, "ALTER TABLE ") {
				alters = append(alters, s)
			}
		}
	}
	var k counted
	tables := map[string][]field{
		TableCDRs: (&cdrRow{}).fields(), TableTransactions: (&txRow{}).fields(),
		TableLedger: (&movementRow{}).fields(), tableCounted: k.fields(),
	}
	for table, fields := range tables {
		start := strings.Index(ddl.String(), "db."+table+"\n")
		if start < 0 {
			t.Fatalf("no CREATE TABLE for %s", table)
		}
		body := ddl.String()[start:]
		body = body[:strings.Index(body, "ENGINE")]
		seen := map[string]bool{}
		for _, f := range fields {
			if seen[f.name] {
				t.Errorf("%s: column %s listed twice", table, f.name)
			}
			seen[f.name] = true
			added := false
			for _, a := range alters {
				if strings.HasPrefix(a, "ALTER TABLE db."+table+"\n") || strings.HasPrefix(a, "ALTER TABLE db."+table+" ") {
					added = added || strings.Contains(a, "ADD COLUMN "+f.name+" ")
				}
			}
			if !strings.Contains(body, "\n    "+f.name+" ") && !added {
				t.Errorf("%s: column %s not in the DDL", table, f.name)
			}
		}
		if _, err := values(fields); err != nil {
			t.Error(err)
		}
	}
}

func TestBadDatabaseNames(t *testing.T) {
	for _, name := range []string{"", "1abc", "a-b", "a.b", "a b", "a;DROP", "`a`"} {
		if err := checkDatabase(name); !errors.Is(err, ErrBadDatabase) {
			t.Errorf("%q accepted", name)
		}
	}
	for _, name := range []string{"carrier", "carrier_test", "_x1"} {
		if err := checkDatabase(name); err != nil {
			t.Errorf("%q refused: %v", name, err)
		}
	}
}
