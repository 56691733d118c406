//go:build !cgo

#include "textflag.h"

// rawHandler is the handler the kernel calls, C ABI: DI is the signal
// number. It runs on the thread's alternate signal stack (SA_ONSTACK; the
// Go runtime gives every thread one) with every signal blocked, and only
// writes that number as one byte to the pipe rawPipe: write(2) is
// async-signal-safe, and the kernel restores every register at sigreturn.
TEXT ·rawHandler(SB),NOSPLIT|NOFRAME,$0
	SUBQ	$16, SP
	MOVB	DI, 0(SP)
	MOVL	·rawPipe(SB), DI
	MOVQ	SP, SI
	MOVQ	$1, DX
	MOVQ	$1, AX // SYS_write
	SYSCALL
	ADDQ	$16, SP
	RET

// rawRestorer returns from the handler: x86-64 requires SA_RESTORER.
TEXT ·rawRestorer(SB),NOSPLIT|NOFRAME,$0
	MOVQ	$15, AX // SYS_rt_sigreturn
	SYSCALL
	INT	$3 // not reached

// func rawAddrs() (handler, restorer uintptr)
TEXT ·rawAddrs(SB),NOSPLIT,$0-16
	MOVQ	$·rawHandler(SB), AX
	MOVQ	AX, handler+0(FP)
	MOVQ	$·rawRestorer(SB), AX
	MOVQ	AX, restorer+8(FP)
	RET
