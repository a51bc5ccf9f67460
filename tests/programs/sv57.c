/* Sv57 (privileged spec 4.6) from M-mode through mstatus.MPRV with MPP = S:
 * satp's mode 10, five-level walks for addresses beyond Sv48's reach (both
 * halves), the A and D bits they set, a 256 TiB petapage, and the page faults
 * of non-canonical addresses, of a misaligned petapage and of the same
 * address under Sv48. Each translated access is one instruction with MPRV
 * and MPP = S set around it (a trap's mret leaves MPP at U); the page tables
 * are built here, in .bss. */
#include "runtime.h"

#define V 0x01
#define R 0x02
#define W 0x04
#define A 0x40
#define D 0x80
#define MPRV (1UL << 17)
#define MPP_S (1UL << 11)
#define MPP (3UL << 11)
#define SV48 9UL
#define SV57 10UL

#define LOW 0x00abcdef12345000UL       /* bit 56 clear, bits 55:47 not all clear */
#define HIGH 0xffabcdef12346000UL      /* bits 63:56 set, bits 55:47 not all set */
#define PETA 0x00cd000000000000UL      /* a 2^48-aligned address (its own root entry) */

static uint64_t pool[16][512] __attribute__((aligned(4096)));
static int used;
static uint64_t frames[4][512] __attribute__((aligned(4096)));

static volatile uintptr_t last_cause, last_tval;

uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame)
{
    (void)frame;
    if (cause & (1UL << 63) || cause == 8 || cause == 9 || cause == 11) {
        printf("unexpected trap: mcause %lx mepc %lx\n", cause, epc);
        exit(1);
    }
    last_cause = cause;
    last_tval = tval;
    uint16_t parcel = *(uint16_t *)epc;
    return epc + ((parcel & 3) == 3 ? 4 : 2);       /* skip the access */
}

static uint64_t *new_table(void)
{
    uint64_t *table = pool[used++];
    memset(table, 0, 4096);
    return table;
}

/* A leaf for vaddr at ``level`` (0: 4 KiB ... 4: 256 TiB) under a 5-level root. */
static uint64_t *map(uint64_t *root, uint64_t vaddr, uint64_t paddr, uint64_t flags, int level)
{
    uint64_t *table = root;
    for (int current = 4; current > level; current--) {
        uint64_t *entry = &table[vaddr >> (12 + 9 * current) & 511];
        if (!(*entry & V))
            *entry = ((uintptr_t)new_table() >> 12) << 10 | V;
        table = (uint64_t *)((*entry >> 10) << 12);
    }
    uint64_t *leaf = &table[vaddr >> (12 + 9 * level) & 511];
    *leaf = (paddr >> 12) << 10 | flags | V;
    return leaf;
}

static uint64_t load(uint64_t vaddr)
{
    uint64_t value = 0;
    last_cause = -1UL;
    __asm__ volatile ("csrc mstatus, %1\n csrs mstatus, %2\n ld %0, 0(%3)\n csrc mstatus, %2"
                      : "+r"(value) : "r"(MPP), "r"(MPRV | MPP_S), "r"(vaddr) : "memory");
    return value;
}

static void store(uint64_t vaddr, uint64_t value)
{
    last_cause = -1UL;
    __asm__ volatile ("csrc mstatus, %0\n csrs mstatus, %1\n sd %2, 0(%3)\n csrc mstatus, %1"
                      :: "r"(MPP), "r"(MPRV | MPP_S), "r"(value), "r"(vaddr) : "memory");
}

static void set_satp(uint64_t mode, uint64_t *root)
{
    write_csr(satp, mode << 60 | (uintptr_t)root >> 12);
    __asm__ volatile ("sfence.vma" ::: "memory");
}

static void fault(const char *what, uint64_t vaddr)
{
    (void)load(vaddr);
    printf("%s %lx: load cause %lx tval %lx", what, vaddr, last_cause, last_tval);
    store(vaddr, 1);
    printf(", store cause %lx\n", last_cause);
}

int main(void)
{
    /* S-mode accesses (MPRV with MPP = S) need a PMP rule under QEMU: all of memory. */
    write_csr(pmpaddr0, -1UL >> 10);
    write_csr(pmpcfg0, 0x1f);

    uint64_t *root = new_table();
    write_csr(satp, SV57 << 60 | (uintptr_t)root >> 12);
    printf("satp mode after writing Sv57: %lx\n", read_csr(satp) >> 60);
    write_csr(satp, 11UL << 60 | 0x123);
    printf("after writing mode 11: %lx\n", read_csr(satp) >> 60);

    uint64_t *low = map(root, LOW, (uintptr_t)frames[0], R | W, 0);
    uint64_t *high = map(root, HIGH, (uintptr_t)frames[1], R | W, 0);
    map(root, PETA, 0, R | W | A | D, 4);
    map(root, PETA + (1UL << 48), (uintptr_t)frames[2], R | W | A | D, 4);   /* misaligned */
    frames[0][1] = 0x5757;
    frames[1][2] = 0x4848;
    frames[3][5] = 0x2560;
    set_satp(SV57, root);

    printf("low: %lx", load(LOW + 8));
    printf(" (pte flags %lx)", *low & 0xff);
    store(LOW + 16, 0x1234);
    printf(", stored %lx (pte flags %lx)\n", frames[0][2], *low & 0xff);
    printf("high: %lx", load(HIGH + 16));
    store(HIGH + 24, 0x4321);
    printf(", stored %lx (pte flags %lx)\n", frames[1][3], *high & 0xff);
    printf("petapage: %lx\n", load(PETA + (uintptr_t)&frames[3][5]));

    fault("bit 56 without 63:57", 0x0100000000000000UL);
    fault("63:57 without bit 56", 0xfe00000000001000UL);
    fault("bit 63 alone", 0x8000000080000000UL);
    fault("bit 57 alone", 0x0200000000000000UL | LOW);
    fault("unmapped", 0x00ab100000000000UL);
    fault("misaligned petapage", PETA + (1UL << 48));

    set_satp(SV48, root);
    fault("Sv48", LOW);
    write_csr(satp, 0);
    return 0;
}
