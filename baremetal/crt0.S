/* Start-up code for bare-metal programs on the virt board (M-mode, hart 0).
 * Other harts park in wfi. Sets up sp and gp, clears .bss, installs
 * trap_entry in mtvec, turns the FPU on, calls main and passes its result
 * to exit(). */
    .section .text.init
    .globl _start
_start:
    csrr    t0, mhartid
    bnez    t0, park
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
    call    main
    call    exit
park:
    wfi
    j       park

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
