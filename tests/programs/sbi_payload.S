/* An S-mode kernel stand-in: greets through the SBI debug console, checks the
 * boot registers (a1 = device tree), says so, then asks SBI to power off. */
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
    lwu t1, 0(s1)           /* the device tree's magic, big-endian d00dfeed */
    li t2, 0xedfe0dd0
    la a1, fdt_ok
    la t0, fdt_ok_end
    beq t1, t2, 2f
    la a1, fdt_bad
    la t0, fdt_bad_end
2:  sub a0, t0, a1
    li a2, 0
    li a7, 0x4442434E
    li a6, 0
    ecall
    li a0, 0                /* SRST: shutdown, no reason */
    li a1, 0
    li a7, 0x53525354
    li a6, 0
    ecall
1:  j 1b
    .section .rodata
message:
    .ascii "hello from S-mode through SBI\n"
message_end:
fdt_ok:
    .ascii "a1 points at the device tree\n"
fdt_ok_end:
fdt_bad:
    .ascii "a1 does not point at a device tree\n"
fdt_bad_end:
