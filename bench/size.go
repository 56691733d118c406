package main

import (
	"debug/elf"
	"fmt"
	"os"
)

// benchSize lists the binaries' sizes on disk, and whether each is static
// (what runs in an image FROM scratch).
func benchSize(cfg *config, t *Table) error {
	type bin struct{ name, path string }
	var bins []bin
	if cfg.cawInit != "" {
		bins = append(bins, bin{"caw-init", cfg.cawInit})
	}
	for _, p := range []peer{peerTiniStatic, peerTini, peerDumbInit, peerGosu} {
		path, err := p.path()
		if err != nil {
			if p != peerGosu {
				t.Note("size: %v", err)
			}
			continue
		}
		bins = append(bins, bin{p.name, path})
	}
	var ref int64
	for _, b := range bins {
		if b.name == "tini-static" {
			if fi, err := os.Stat(b.path); err == nil {
				ref = fi.Size()
			}
		}
	}
	for i, b := range bins {
		fi, err := os.Stat(b.path)
		if err != nil {
			return err
		}
		r := Row{Subject: b.name + " (" + linkage(b.path) + ")", Median: fmtBytes(fi.Size())}
		if i == 0 {
			r.Measure = "binary size"
		}
		if ref > 0 {
			r.Ratio = ratio(float64(fi.Size()), float64(ref)) + " tini-static"
		}
		if b.name == "caw-init" {
			r.Goal = verdict("< 3 MiB", fi.Size() < 3<<20)
		}
		t.Add(r)
	}
	return nil
}

// linkage says "static" or "dynamic" from the ELF program headers.
func linkage(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Sprintf("not ELF: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "dynamic"
		}
	}
	return "static"
}
