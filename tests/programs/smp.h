/* Shared by the multi-hart programs that run in lockstep with QEMU
 * (tests/test_lockstep.py): the virt board's CLINT and PLIC, and a barrier.
 * Harts other than 0 run hart_main (baremetal/crt0.S). */
#ifndef SMP_H
#define SMP_H
#include "runtime.h"

#ifndef HARTS
#define HARTS 4                 /* the harts the program runs on (-smp) */
#endif

#define MSIP(h) ((volatile uint32_t *)(0x02000000UL + 4 * (h)))
#define MTIMECMP(h) ((volatile uint64_t *)(0x02004000UL + 8 * (h)))
#define MTIME ((volatile uint64_t *)0x0200bff8UL)

/* QEMU's virt PLIC (hw/riscv/virt.c): context 2h is hart h's M-mode. */
#define PLIC_PRIORITY(s) ((volatile uint32_t *)(0x0c000000UL + 4 * (s)))
#define PLIC_ENABLE(h) ((volatile uint32_t *)(0x0c002000UL + 0x80 * 2 * (h)))
#define PLIC_THRESHOLD(h) ((volatile uint32_t *)(0x0c200000UL + 0x1000 * 2 * (h)))
#define PLIC_CLAIM(h) ((volatile uint32_t *)(0x0c200004UL + 0x1000 * 2 * (h)))

#define MIE_MSIE 0x8
#define MIE_MTIE 0x80
#define MIE_MEIE 0x800
#define CAUSE_MSI ((1UL << 63) | 3)
#define CAUSE_MTI ((1UL << 63) | 7)
#define CAUSE_MEI ((1UL << 63) | 11)

#define hartid() read_csr(mhartid)
#define interrupts_on() __asm__ volatile ("csrsi mstatus, 8")
#define interrupts_off() __asm__ volatile ("csrci mstatus, 8")

/* Every hart spins (no WFI) until all HARTS have arrived; reusable. */
static volatile int barrier_count, barrier_generation;
static inline void barrier(void)
{
    int generation = barrier_generation;
    if (__atomic_add_fetch(&barrier_count, 1, __ATOMIC_ACQ_REL) == HARTS) {
        barrier_count = 0;
        __atomic_store_n(&barrier_generation, generation + 1, __ATOMIC_RELEASE);
    } else {
        while (__atomic_load_n(&barrier_generation, __ATOMIC_ACQUIRE) == generation)
            ;
    }
}

static inline void unexpected(uintptr_t cause, uintptr_t epc, uintptr_t tval)
{
    printf("hart %d: unexpected trap: mcause %lx mepc %lx mtval %lx\n",
           (int)hartid(), cause, epc, tval);
    exit(3);
}
#endif
