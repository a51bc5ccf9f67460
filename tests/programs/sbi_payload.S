/* An S-mode kernel stand-in: greets through the SBI debug console, shows the
 * boot registers (a0 = hart id, a1 = device tree), then asks SBI to power off. */
    .section .text.init
    .globl _start
_start:
    mv s0, a0
    mv s1, a1
    la a1, message
    la t0, message_end
    sub a0, t0, a1
    li a2, 0
    li a7, 0x4442434E       /* DBCN extension: sbi_debug_console_write(len, lo, hi) */
    li a6, 0
    ecall
    lw t1, 0(s1)            /* the device tree's magic, big-endian d00dfeed */
    li t2, 0xedfe0dd0
    bne t1, t2, fail
    li a0, 0                /* SRST: shutdown, no reason */
    li a1, 0
    li a7, 0x53525354
    li a6, 0
    ecall
fail:
    li a0, 1                /* SRST: shutdown, system failure */
    li a1, 1
    li a7, 0x53525354
    li a6, 0
    ecall
1:  j 1b
    .section .rodata
message:
    .ascii "hello from S-mode through SBI\n"
message_end:
