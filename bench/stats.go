package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Sample is a set of measured durations.
type Sample []time.Duration

// sorted returns a sorted copy.
func (s Sample) sorted() Sample {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// Median is the middle value (the mean of the two middle ones for an even
// count); 0 for an empty sample.
func (s Sample) Median() time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := s.sorted()
	n := len(c)
	if n%2 == 1 {
		return c[n/2]
	}
	return (c[n/2-1] + c[n/2]) / 2
}

// Quantile is the nearest-rank q-quantile (0 < q <= 1): the smallest value
// with at least q of the sample at or below it. P99 of 100 values is the
// 99th smallest: a single outlier in 100 runs does not show, two do.
func (s Sample) Quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := s.sorted()
	i := int(math.Ceil(q*float64(len(c)))) - 1
	return c[max(0, min(i, len(c)-1))]
}

// P99 is Quantile(0.99).
func (s Sample) P99() time.Duration { return s.Quantile(0.99) }

// Max is the largest value.
func (s Sample) Max() time.Duration { return s.Quantile(1) }

// fmtDur renders a duration with three significant digits in the unit that
// suits it: "842 µs", "1.27 ms", "3.10 s".
func fmtDur(d time.Duration) string {
	if d < 0 {
		return "-" + fmtDur(-d)
	}
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < time.Millisecond:
		return sig3(float64(d)/float64(time.Microsecond)) + " µs"
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + " ms"
	}
	return sig3(d.Seconds()) + " s"
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// fmtBytes renders a size in KiB or MiB.
func fmtBytes(b int64) string {
	switch {
	case b < 1<<10:
		return fmt.Sprintf("%d B", b)
	case b < 1<<20:
		return sig3(float64(b)/(1<<10)) + " KiB"
	}
	return sig3(float64(b)/(1<<20)) + " MiB"
}

// ratio renders a/b as "1.23x"; "-" when b is zero.
func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return sig3(a/b) + "x"
}
