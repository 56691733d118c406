package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Row is one line of the bench table: one subject measured for one thing.
type Row struct {
	Measure string // what is measured; repeated rows of a group leave it ""
	Subject string // caw-init, tini, shell guard, ...
	N       string // sample size, or the window for idle rows
	Median  string
	P99     string // "" where it is not a latency
	Ratio   string // to the group's peer, e.g. "1.31x tini"
	Goal    string // the target and whether it is met: "<= 2x tini: ok"
}

// Table is the bench's one output table.
type Table struct {
	Title string
	Rows  []Row
	Notes []string
}

var header = Row{Measure: "measure", Subject: "subject", N: "n", Median: "median", P99: "p99", Ratio: "vs peer", Goal: "goal"}

// Write renders the table with aligned columns (by rune count, so "µs"
// lines up) and the notes below it.
func (t *Table) Write(w io.Writer) error {
	rows := append([]Row{header}, t.Rows...)
	// One line per row: an error's own newlines must not break the table.
	flat := strings.NewReplacer("\r", " ", "\n", " ")
	cols := func(r Row) []string {
		c := []string{r.Measure, r.Subject, r.N, r.Median, r.P99, r.Ratio, r.Goal}
		for i := range c {
			c[i] = strings.TrimSpace(flat.Replace(c[i]))
		}
		return c
	}
	width := make([]int, 7)
	for _, r := range rows {
		for i, c := range cols(r) {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	if t.Title != "" {
		b.WriteString(t.Title + "\n")
	}
	for ri, r := range rows {
		var line strings.Builder
		for i, c := range cols(r) {
			pad := width[i] - utf8.RuneCountInString(c)
			// Numbers align right, words left.
			if i >= 2 && i <= 4 {
				line.WriteString(strings.Repeat(" ", pad) + c)
			} else {
				line.WriteString(c + strings.Repeat(" ", pad))
			}
			if i < 6 {
				line.WriteString("  ")
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
		if ri == 0 {
			total := 0
			for _, wd := range width {
				total += wd + 2
			}
			b.WriteString(strings.Repeat("-", total-2) + "\n")
		}
	}
	for _, n := range t.Notes {
		b.WriteString("* " + n + "\n")
	}
	_, err := fmt.Fprint(w, b.String())
	return err
}

// Add appends rows.
func (t *Table) Add(rows ...Row) { t.Rows = append(t.Rows, rows...) }

// Note appends a line under the table.
func (t *Table) Note(format string, args ...any) {
	t.Notes = append(t.Notes, fmt.Sprintf(format, args...))
}

// verdict renders a goal and whether it is met.
func verdict(goal string, ok bool) string {
	if ok {
		return goal + ": ok"
	}
	return goal + ": MISSED"
}

// baselineName is the subject --baseline adds.
const baselineName = "caw-init baseline"

// noteBaseline says how the caw-init under test compares with the baseline
// measured in the same run, when there is one.
func noteBaseline(t *Table, label string, cawInit, base Sample) {
	if len(cawInit) == 0 || len(base) == 0 {
		return
	}
	t.Note("%s: caw-init p50 %s the baseline's (%s vs %s), p99 %s vs %s", label,
		ratio(float64(cawInit.Median()), float64(base.Median())), fmtDur(cawInit.Median()), fmtDur(base.Median()),
		fmtDur(cawInit.P99()), fmtDur(base.P99()))
}
