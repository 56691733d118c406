//go:build !cgo

#include "textflag.h"

#define SYS_write		1
#define SYS_rt_sigaction	13
#define SYS_rt_sigprocmask	14
#define SYS_execve		59
#define SYS_fcntl		72
#define SYS_exit_group		231

// rt0 is caw-init's ELF entry point when linked with
// -ldflags=-E=github.com/caw-dev/caw/init/pid1.rt0 (see entry.go). The
// kernel starts it with SP at argc, argv, NULL, envp, NULL, auxv; nothing
// else has run. It touches no stack: its memory is entryScratch.
//
// Started as the trampoline (argv[0] is trampolineName), it sets the
// signal configuration argv[1] and argv[2] give and execs the command.
// Otherwise it records which signals are ignored and which are blocked,
// puts back the registers it used, and jumps to the Go runtime's own entry
// point with the stack as the kernel gave it.
TEXT ·rt0(SB),NOSPLIT|NOFRAME,$0
	MOVQ	AX, ·entryScratch+48(SB)
	MOVQ	CX, ·entryScratch+56(SB)
	MOVQ	DX, ·entryScratch+64(SB)
	MOVQ	SI, ·entryScratch+72(SB)
	MOVQ	DI, ·entryScratch+80(SB)
	MOVQ	R8, ·entryScratch+88(SB)
	MOVQ	R9, ·entryScratch+96(SB)
	MOVQ	R10, ·entryScratch+104(SB)
	MOVQ	R11, ·entryScratch+112(SB)
	MOVQ	R12, ·entryScratch+120(SB)

	// The trampoline: argc >= 5 and argv[0] == trampolineName. The
	// comparison stops at the first byte that differs, so it never reads
	// past the end of argv[0].
	MOVQ	0(SP), R12
	CMPQ	R12, $5
	JLT	capture
	MOVQ	8(SP), SI
	MOVQ	·trampolineName(SB), DI
	MOVQ	·trampolineName+8(SB), CX
name:
	MOVBQZX	(SI), AX
	MOVBQZX	(DI), R8
	CMPQ	AX, R8
	JNE	capture
	INCQ	SI
	INCQ	DI
	DECQ	CX
	JNZ	name
	MOVBQZX	(SI), AX
	TESTQ	AX, AX
	JZ	trampoline

capture:
	// R9: the ignored set, bit n-1 for signal n.
	XORQ	R9, R9
	MOVQ	$1, R12
query:
	MOVQ	$SYS_rt_sigaction, AX
	MOVQ	R12, DI
	XORQ	SI, SI
	MOVQ	$·entryScratch(SB), DX
	MOVQ	$8, R10
	SYSCALL
	TESTQ	AX, AX
	JNE	nextquery
	MOVQ	·entryScratch(SB), AX
	CMPQ	AX, $1 // SIG_IGN
	JNE	nextquery
	LEAQ	-1(R12), CX
	BTSQ	CX, R9
nextquery:
	INCQ	R12
	CMPQ	R12, $64
	JLE	query
	MOVQ	R9, ·entryIgnored(SB)
	MOVQ	$SYS_rt_sigprocmask, AX
	XORQ	DI, DI
	XORQ	SI, SI
	MOVQ	$·entryBlocked(SB), DX
	MOVQ	$8, R10
	SYSCALL
	MOVL	$1, ·entryRan(SB)

	MOVQ	·entryScratch+48(SB), AX
	MOVQ	·entryScratch+56(SB), CX
	MOVQ	·entryScratch+64(SB), DX
	MOVQ	·entryScratch+72(SB), SI
	MOVQ	·entryScratch+80(SB), DI
	MOVQ	·entryScratch+88(SB), R8
	MOVQ	·entryScratch+96(SB), R9
	MOVQ	·entryScratch+104(SB), R10
	MOVQ	·entryScratch+112(SB), R11
	MOVQ	·entryScratch+120(SB), R12
	JMP	_rt0_amd64_linux(SB)

trampoline:
	// argv: trampolineName, ignored set, blocked set (16 hex digits
	// each), the command's path, its argv. Fd 3 is the report pipe.
	MOVQ	16(SP), SI
	XORQ	R9, R9
	MOVQ	$16, CX
hexign:
	MOVBQZX	(SI), AX
	TESTQ	AX, AX
	JZ	ignparsed
	CMPQ	AX, $'a'
	JLT	digign
	SUBQ	$('a'-10), AX
	JMP	gotign
digign:
	SUBQ	$'0', AX
gotign:
	SHLQ	$4, R9
	ORQ	AX, R9
	INCQ	SI
	DECQ	CX
	JNZ	hexign
ignparsed:
	MOVQ	24(SP), SI
	XORQ	R13, R13
	MOVQ	$16, CX
hexblk:
	MOVBQZX	(SI), AX
	TESTQ	AX, AX
	JZ	blkparsed
	CMPQ	AX, $'a'
	JLT	digblk
	SUBQ	$('a'-10), AX
	JMP	gotblk
digblk:
	SUBQ	$'0', AX
gotblk:
	SHLQ	$4, R13
	ORQ	AX, R13
	INCQ	SI
	DECQ	CX
	JNZ	hexblk
blkparsed:

	// Every signal of the set to SIG_IGN: {SIG_IGN, 0, 0, 0}.
	MOVQ	$1, ·entryScratch(SB)
	MOVQ	$1, R12
ignore:
	LEAQ	-1(R12), CX
	BTQ	CX, R9
	JCC	nextignore
	MOVQ	$SYS_rt_sigaction, AX
	MOVQ	R12, DI
	MOVQ	$·entryScratch(SB), SI
	XORQ	DX, DX
	MOVQ	$8, R10
	SYSCALL
nextignore:
	INCQ	R12
	CMPQ	R12, $64
	JLE	ignore

	MOVQ	R13, ·entryScratch+32(SB)
	MOVQ	$SYS_rt_sigprocmask, AX
	MOVQ	$2, DI // SIG_SETMASK
	MOVQ	$·entryScratch+32(SB), SI
	XORQ	DX, DX
	MOVQ	$8, R10
	SYSCALL

	// The report pipe closes when the command's exec succeeds.
	MOVQ	$SYS_fcntl, AX
	MOVQ	$3, DI
	MOVQ	$2, SI // F_SETFD
	MOVQ	$1, DX // FD_CLOEXEC
	SYSCALL
	TESTQ	AX, AX
	JNE	failed

	// execve(argv[3], &argv[4], envp); envp is &argv[argc+1].
	MOVQ	32(SP), DI
	LEAQ	40(SP), SI
	MOVQ	0(SP), AX
	LEAQ	16(SP)(AX*8), DX
	MOVQ	$SYS_execve, AX
	SYSCALL

failed:
	// AX is -errno: send errno (4 bytes) and exit 127.
	NEGQ	AX
	MOVL	AX, ·entryScratch+40(SB)
	MOVQ	$SYS_write, AX
	MOVQ	$3, DI
	MOVQ	$·entryScratch+40(SB), SI
	MOVQ	$4, DX
	SYSCALL
	MOVQ	$SYS_exit_group, AX
	MOVQ	$127, DI
	SYSCALL
	INT	$3 // not reached
