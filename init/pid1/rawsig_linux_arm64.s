//go:build !cgo

#include "textflag.h"

// rawHandler is the handler the kernel calls, C ABI: R0 is the signal
// number, LR the kernel's sigreturn trampoline (the vDSO's). It runs on the
// thread's alternate signal stack (SA_ONSTACK; the Go runtime gives every
// thread one) with every signal blocked, and only writes that number as
// one byte to the pipe rawPipe: write(2) is async-signal-safe, and the
// kernel restores every register at sigreturn.
TEXT ·rawHandler(SB),NOSPLIT|NOFRAME,$0
	SUB	$16, RSP
	MOVB	R0, (RSP)
	MOVW	·rawPipe(SB), R0
	MOVD	RSP, R1
	MOVD	$1, R2
	MOVD	$64, R8 // SYS_write
	SVC
	ADD	$16, RSP
	RET

// rawRestorer is unused on arm64: the kernel returns through the vDSO.
TEXT ·rawRestorer(SB),NOSPLIT|NOFRAME,$0
	MOVD	$139, R8 // SYS_rt_sigreturn
	SVC

// func rawAddrs() (handler, restorer uintptr)
TEXT ·rawAddrs(SB),NOSPLIT,$0-16
	MOVD	$·rawHandler(SB), R0
	MOVD	R0, handler+0(FP)
	MOVD	$0, R0
	MOVD	R0, restorer+8(FP)
	RET
