//go:build !cgo

#include "textflag.h"

#define SYS_fcntl		25
#define SYS_write		64
#define SYS_exit_group		94
#define SYS_rt_sigaction	134
#define SYS_rt_sigprocmask	135
#define SYS_execve		221

// rt0 is caw-init's ELF entry point when linked with
// -ldflags=-E=github.com/caw-dev/caw/init/pid1.rt0 (see entry.go and the
// amd64 version, which this one follows step by step). The kernel starts
// it with RSP at argc, argv, NULL, envp, NULL, auxv. R27, the assembler's
// temporary, is not put back: the kernel starts every register at zero
// and the runtime's entry reads only RSP.
TEXT ·rt0(SB),NOSPLIT|NOFRAME,$0
	MOVD	R0, ·entryScratch+48(SB)
	MOVD	R1, ·entryScratch+56(SB)
	MOVD	R2, ·entryScratch+64(SB)
	MOVD	R3, ·entryScratch+72(SB)
	MOVD	R4, ·entryScratch+80(SB)
	MOVD	R5, ·entryScratch+88(SB)
	MOVD	R8, ·entryScratch+96(SB)
	MOVD	R9, ·entryScratch+104(SB)
	MOVD	R10, ·entryScratch+112(SB)
	MOVD	R11, ·entryScratch+120(SB)
	MOVD	R12, ·entryScratch+128(SB)
	MOVD	R13, ·entryScratch+136(SB)

	// The trampoline: argc >= 5 and argv[0] == trampolineName.
	MOVD	0(RSP), R9
	CMP	$5, R9
	BLT	capture
	MOVD	8(RSP), R1
	MOVD	·trampolineName(SB), R2
	MOVD	·trampolineName+8(SB), R3
name:
	MOVBU	(R1), R4
	MOVBU	(R2), R5
	CMP	R5, R4
	BNE	capture
	ADD	$1, R1
	ADD	$1, R2
	SUBS	$1, R3
	BNE	name
	MOVBU	(R1), R4
	CBZ	R4, trampoline

capture:
	// R10: the ignored set, bit n-1 for signal n.
	MOVD	$0, R10
	MOVD	$1, R9
query:
	MOVD	R9, R0
	MOVD	$0, R1
	MOVD	$·entryScratch(SB), R2
	MOVD	$8, R3
	MOVD	$SYS_rt_sigaction, R8
	SVC
	CBNZ	R0, nextquery
	MOVD	·entryScratch(SB), R0
	CMP	$1, R0 // SIG_IGN
	BNE	nextquery
	SUB	$1, R9, R11
	MOVD	$1, R12
	LSL	R11, R12, R12
	ORR	R12, R10, R10
nextquery:
	ADD	$1, R9
	CMP	$64, R9
	BLE	query
	MOVD	R10, ·entryIgnored(SB)
	MOVD	$0, R0
	MOVD	$0, R1
	MOVD	$·entryBlocked(SB), R2
	MOVD	$8, R3
	MOVD	$SYS_rt_sigprocmask, R8
	SVC
	MOVW	$1, R0
	MOVW	R0, ·entryRan(SB)

	MOVD	·entryScratch+48(SB), R0
	MOVD	·entryScratch+56(SB), R1
	MOVD	·entryScratch+64(SB), R2
	MOVD	·entryScratch+72(SB), R3
	MOVD	·entryScratch+80(SB), R4
	MOVD	·entryScratch+88(SB), R5
	MOVD	·entryScratch+96(SB), R8
	MOVD	·entryScratch+104(SB), R9
	MOVD	·entryScratch+112(SB), R10
	MOVD	·entryScratch+120(SB), R11
	MOVD	·entryScratch+128(SB), R12
	MOVD	·entryScratch+136(SB), R13
	JMP	_rt0_arm64_linux(SB)

trampoline:
	MOVD	16(RSP), R1
	MOVD	$0, R10
	MOVD	$16, R3
hexign:
	MOVBU	(R1), R4
	CBZ	R4, ignparsed
	CMP	$'a', R4
	BLT	digign
	SUB	$('a'-10), R4
	B	gotign
digign:
	SUB	$'0', R4
gotign:
	LSL	$4, R10
	ORR	R4, R10
	ADD	$1, R1
	SUBS	$1, R3
	BNE	hexign
ignparsed:
	MOVD	24(RSP), R1
	MOVD	$0, R13
	MOVD	$16, R3
hexblk:
	MOVBU	(R1), R4
	CBZ	R4, blkparsed
	CMP	$'a', R4
	BLT	digblk
	SUB	$('a'-10), R4
	B	gotblk
digblk:
	SUB	$'0', R4
gotblk:
	LSL	$4, R13
	ORR	R4, R13
	ADD	$1, R1
	SUBS	$1, R3
	BNE	hexblk
blkparsed:

	MOVD	$1, R0
	MOVD	R0, ·entryScratch(SB)
	MOVD	$1, R9
ignore:
	SUB	$1, R9, R11
	LSR	R11, R10, R12
	TBZ	$0, R12, nextignore
	MOVD	R9, R0
	MOVD	$·entryScratch(SB), R1
	MOVD	$0, R2
	MOVD	$8, R3
	MOVD	$SYS_rt_sigaction, R8
	SVC
nextignore:
	ADD	$1, R9
	CMP	$64, R9
	BLE	ignore

	MOVD	R13, ·entryScratch+32(SB)
	MOVD	$2, R0 // SIG_SETMASK
	MOVD	$·entryScratch+32(SB), R1
	MOVD	$0, R2
	MOVD	$8, R3
	MOVD	$SYS_rt_sigprocmask, R8
	SVC

	MOVD	$3, R0
	MOVD	$2, R1 // F_SETFD
	MOVD	$1, R2 // FD_CLOEXEC
	MOVD	$SYS_fcntl, R8
	SVC
	CBNZ	R0, failed

	// execve(argv[3], &argv[4], envp); envp is &argv[argc+1].
	MOVD	32(RSP), R0
	ADD	$40, RSP, R1
	MOVD	0(RSP), R2
	LSL	$3, R2
	ADD	$16, R2
	MOVD	RSP, R3
	ADD	R3, R2
	MOVD	$SYS_execve, R8
	SVC

failed:
	NEG	R0, R0
	MOVW	R0, ·entryScratch+40(SB)
	MOVD	$3, R0
	MOVD	$·entryScratch+40(SB), R1
	MOVD	$4, R2
	MOVD	$SYS_write, R8
	SVC
	MOVD	$127, R0
	MOVD	$SYS_exit_group, R8
	SVC
