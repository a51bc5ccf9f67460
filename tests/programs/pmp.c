/* PMP (privileged spec 3.7) and Sdtrig address triggers (Debug spec 5), as
 * QEMU 7.2 and hartvm both run them. Loads and stores are made with
 * mstatus.MPRV and MPP = S, so that PMP checks them as S-mode accesses while
 * the code runs in M-mode; a locked entry refuses changes. */
#include "runtime.h"

#define NAPOT (3 << 3)
#define NA4 (2 << 3)
#define TOR (1 << 3)
#define R 1
#define W 2
#define X 4
#define L 0x80

static volatile uint64_t region[1024] __attribute__((aligned(4096)));
static volatile uintptr_t trap_cause, trap_tval, trap_epc;

uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame)
{
    (void)frame;
    trap_cause = cause;
    trap_tval = tval;
    trap_epc = epc;
    return epc + 4;                    /* every probe instruction is 4 bytes */
}

/* A load or store checked as S-mode (MPRV, MPP = S): the trap's cause or -1. */
static long probe(volatile uint64_t *p, int store)
{
    trap_cause = -1;
    uint64_t value = 0;
    __asm__ volatile (
        "li t0, 0x1800\n csrc mstatus, t0\n li t0, 0x20800\n csrs mstatus, t0\n"
        ".option push\n .option norvc\n"
        "bnez %1, 1f\n ld %0, 0(%2)\n j 3f\n1: addi %1, %1, -1\n bnez %1, 2f\n sd %0, 0(%2)\n j 3f\n2: sw %0, 0(%2)\n3:\n"
        ".option pop\n"
        "li t0, 0x21800\n csrc mstatus, t0\n li t0, 0x1800\n csrs mstatus, t0\n"
        : "+r"(value), "+r"(store) : "r"(p) : "t0", "memory");
    return trap_cause;
}

static void report(const char *what, volatile uint64_t *p, int store)
{
    long cause = probe(p, store);
    printf("%s: cause %ld%s\n", what, cause,
           cause >= 0 && trap_tval != (uintptr_t)p ? " (tval differs)" : "");
}

static void set_entry(int i, uintptr_t address, uint64_t config)
{
    uint64_t cfg;
    __asm__ volatile ("csrr %0, pmpcfg0" : "=r"(cfg));
    cfg = (cfg & ~(0xffUL << (8 * i))) | (config << (8 * i));
    switch (i) {
    case 0: __asm__ volatile ("csrw pmpaddr0, %0" :: "r"(address)); break;
    case 1: __asm__ volatile ("csrw pmpaddr1, %0" :: "r"(address)); break;
    case 2: __asm__ volatile ("csrw pmpaddr2, %0" :: "r"(address)); break;
    case 3: __asm__ volatile ("csrw pmpaddr3, %0" :: "r"(address)); break;
    }
    __asm__ volatile ("csrw pmpcfg0, %0" :: "r"(cfg));
}

int main(void)
{
    uintptr_t base = (uintptr_t)region;
    report("no entry, S load", &region[0], 0);
    set_entry(3, -1UL >> 10, NAPOT | R | W | X);                 /* all memory */
    report("last entry, S load", &region[0], 0);
    set_entry(0, (base + 0x800) >> 2, TOR | R);                  /* [0, base + 0x800) */
    report("TOR R, S load", &region[1], 0);
    report("TOR R, S store", &region[1], 1);
    report("above TOR, S store", &region[0x100], 1);
    set_entry(0, (base + 16) >> 2, NA4 | W | R);
    set_entry(1, (base >> 2) | 0x1ff, NAPOT | R);                 /* the 4 KiB region */
    report("NA4 RW, S 8-byte store (partial)", &region[2], 1);
    report("NA4 RW, S 4-byte store", &region[2], 2);
    report("NA4 partial, S load", (volatile uint64_t *)(base + 12), 0);
    report("NAPOT R, S store", &region[8], 1);
    report("NAPOT R, S load", &region[8], 0);
    set_entry(1, (base >> 2) | 0x1ff, NAPOT);
    report("NAPOT none, S load", &region[9], 0);
    set_entry(1, 0, 0);
    /* Locked: binds M-mode; the entry and its address no longer change. */
    set_entry(2, (base + 0x1000) >> 2 | 0x1ff, NAPOT | R | L);
    set_entry(2, 0, NAPOT | R | W | X);
    uint64_t cfg;
    __asm__ volatile ("csrr %0, pmpcfg0" : "=r"(cfg));
    printf("locked entry 2 config: %lx\n", (unsigned long)((cfg >> 16) & 0xff));

    return 0;
}
