/* Start-up code for bare-metal programs on the virt board (M-mode, hart 0).
 * Sets up sp and gp, clears .bss, installs trap_entry in mtvec, turns the
 * FPU on, calls main and passes its result to exit().
 *
 * Other harts park in wfi, unless the program defines
 * ``void hart_main(unsigned long hartid)``: then each of them waits until
 * hart 0 has cleared .bss, takes its own 8 KiB of stack below hart 0's
 * (sp = __stack_top - hartid * 0x2000), sets gp, mtvec and the FPU as hart 0
 * does and calls it; it parks in wfi if hart_main returns. */
    .section .text.init
    .globl _start
_start:
    csrr    a0, mhartid
    bnez    a0, secondary
    la      sp, __stack_top
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:  la      t0, trap_entry
    csrw    mtvec, t0
    li      t0, 0x2000              /* mstatus.FS = Initial: the FPU is on */
    csrs    mstatus, t0
    la      t0, bss_cleared
    li      t1, 1
    fence   rw, w                   /* .bss is clear before the flag is seen */
    sw      t1, 0(t0)
    call    main
    call    exit
secondary:
    .weak   hart_main
    ld      s1, hart_main_address   /* (an absolute address: a weak one may be 0) */
    beqz    s1, park
    la      t0, bss_cleared
1:  lw      t1, 0(t0)
    beqz    t1, 1b
    fence   r, rw
    slli    t1, a0, 13
    la      sp, __stack_top
    sub     sp, sp, t1
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop
    la      t0, trap_entry
    csrw    mtvec, t0
    li      t0, 0x2000
    csrs    mstatus, t0
    jalr    s1
park:
    wfi
    j       park

    .data
    .align  3
hart_main_address:
    .dword  hart_main
bss_cleared:                        /* in .data: hart 0 clears .bss after others start */
    .word   0
    .text

/* Saves x1..x31 in a frame, calls handle_trap(mcause, mepc, mtval, frame)
 * and resumes at the pc it returns (the frame may be changed). */
    .align 2
    .globl trap_entry
trap_entry:
    addi    sp, sp, -256
    .irp n, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    sd      x\n, (\n*8)(sp)
    .endr
    addi    t0, sp, 256
    sd      t0, 16(sp)              /* the frame holds the interrupted sp */
    csrr    a0, mcause
    csrr    a1, mepc
    csrr    a2, mtval
    mv      a3, sp
    call    handle_trap
    csrw    mepc, a0
    .irp n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      x\n, (\n*8)(sp)
    .endr
    addi    sp, sp, 256
    mret
