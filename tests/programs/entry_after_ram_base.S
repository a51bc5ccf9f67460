/* An ELF whose entry point is not the start of RAM. With -bios none, QEMU's
   reset vector jumps to the start of RAM, not to the entry, and passes in
   fw_dynamic_info (a2) next_addr = the ELF's lowest load address, at offset
   16 (hw/riscv/virt.c, hw/riscv/boot.c). The code at the start of RAM
   checks next_addr, marks s0 and goes on to the entry, which passes only if
   it came that way. */
.section .text
.globl _start
_start:                         /* 0x80000000, where QEMU starts */
    ld t0, 16(a2)               /* fw_dynamic_info.next_addr */
    la t1, _start               /* the lowest load address (this ELF's first segment) */
    li s0, 0x5a
    beq t0, t1, 1f
    li s0, 0x6b                 /* next_addr is something else: status 6 */
1:  la t0, entry
    jr t0
.balign 16
.globl entry
entry:                          /* the ELF's entry point (-e entry) */
    li t0, 0x100000             /* the SiFive test finisher */
    li t1, 0x5555               /* pass */
    li t2, 0x5a
    beq s0, t2, 2f
    li t1, 0x63333              /* status 6: wrong next_addr */
    li t2, 0x6b
    beq s0, t2, 2f
    li t1, 0x73333              /* status 7: started at the entry */
2:  sw t1, 0(t0)
3:  j 3b
