package main

import (
	"strings"
	"testing"
	"time"
)

func ms(v ...float64) Sample {
	s := make(Sample, len(v))
	for i, x := range v {
		s[i] = time.Duration(x * float64(time.Millisecond))
	}
	return s
}

func TestMedianOddEvenEmpty(t *testing.T) {
	if got := ms(5, 1, 3).Median(); got != 3*time.Millisecond {
		t.Errorf("median of 5,1,3 = %v, want 3ms", got)
	}
	if got := ms(4, 1, 3, 2).Median(); got != 2500*time.Microsecond {
		t.Errorf("median of 4,1,3,2 = %v, want 2.5ms", got)
	}
	if got := (Sample{}).Median(); got != 0 {
		t.Errorf("median of nothing = %v, want 0", got)
	}
}

func TestQuantileNearestRank(t *testing.T) {
	var s Sample
	for i := 100; i >= 1; i-- { // unsorted on purpose
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.99, 99 * time.Millisecond}, {0.5, 50 * time.Millisecond}, {1, 100 * time.Millisecond}, {0.001, time.Millisecond}} {
		if got := s.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) of 1..100 ms = %v, want %v", c.q, got, c.want)
		}
	}
	// One outlier in 100 does not move the p99; two do.
	one := append(ms(make([]float64, 99)...), time.Second)
	if one.P99() != 0 {
		t.Errorf("p99 with one outlier in 100 = %v, want 0", one.P99())
	}
	two := append(ms(make([]float64, 98)...), time.Second, time.Second)
	if two.P99() != time.Second {
		t.Errorf("p99 with two outliers in 100 = %v, want 1s", two.P99())
	}
	if s[0] != 100*time.Millisecond {
		t.Error("Quantile sorted the caller's sample in place")
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{842 * time.Microsecond, "842 µs"}, {1270 * time.Microsecond, "1.27 ms"}, {12345 * time.Microsecond, "12.3 ms"},
		{3100 * time.Millisecond, "3.10 s"}, {15, "15 ns"}, {-2 * time.Millisecond, "-2.00 ms"},
	} {
		if got := fmtDur(c.d); got != c.want {
			t.Errorf("fmtDur(%v) = %q, want %q", c.d, got, c.want)
		}
	}
	if got := fmtBytes(708080); got != "691 KiB" {
		t.Errorf("fmtBytes(708080) = %q", got)
	}
	if got := fmtBytes(4512079); got != "4.30 MiB" {
		t.Errorf("fmtBytes(4512079) = %q", got)
	}
	if got := ratio(3, 2); got != "1.50x" {
		t.Errorf("ratio(3,2) = %q", got)
	}
	if got := ratio(1, 0); got != "-" {
		t.Errorf("ratio(1,0) = %q", got)
	}
}

func TestTableAlignsColumns(t *testing.T) {
	tb := &Table{Title: "title"}
	tb.Add(Row{Measure: "sync", Subject: "caw-init", N: "1000", Median: "842 µs", P99: "1.27 ms", Ratio: "0.12x shell", Goal: verdict("p99 < 2 ms", true)},
		Row{Subject: "shell guard", N: "1000", Median: "10.8 ms", P99: "15.0 ms", Ratio: "1.00x shell", Goal: verdict("x", false)})
	tb.Note("a note %d", 7)
	tb.Add(Row{Subject: "broken", Goal: "FAILED: first line\nsecond line\n"})
	var b strings.Builder
	if err := tb.Write(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 7 || lines[0] != "title" || lines[6] != "* a note 7" || !strings.HasSuffix(lines[5], "FAILED: first line second line") {
		t.Fatalf("unexpected layout:\n%s", b.String())
	}
	// The medians are right-aligned: they end in the same rune column, µ
	// counted as one.
	end := func(line, cell string) int {
		i := strings.Index(line, cell)
		if i < 0 {
			t.Fatalf("%q not in %q", cell, line)
		}
		return len([]rune(line[:i])) + len([]rune(cell))
	}
	if a, c := end(lines[3], "842 µs"), end(lines[4], "10.8 ms"); a != c {
		t.Errorf("median column not aligned (%d vs %d):\n%s", a, c, b.String())
	}
	if !strings.Contains(lines[3], "p99 < 2 ms: ok") || !strings.Contains(lines[4], "x: MISSED") {
		t.Errorf("verdicts missing:\n%s", b.String())
	}
	if strings.HasPrefix(lines[4], "sync") {
		t.Errorf("a group's second row repeats the measure:\n%s", b.String())
	}
}
