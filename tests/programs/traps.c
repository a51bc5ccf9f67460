/* M-mode traps from C: ecall, ebreak, illegal instruction, access faults. */
#include "runtime.h"

static int traps;

uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame)
{
    traps++;
    printf("trap %d: mcause %lx", traps, cause);
    if (cause == 2 || cause == 5 || cause == 7)
        printf(" mtval %lx", tval);
    printf("\n");
    frame[10] = 0xabc;                              /* a0: tell the caller */
    uint16_t parcel = *(uint16_t *)epc;
    return epc + ((parcel & 3) == 3 ? 4 : 2);       /* skip the instruction */
}

int main(void)
{
    register long a0 __asm__("a0");
    __asm__ volatile ("li a0, 0\n ecall" : "=r"(a0) :: "memory");
    printf("after ecall a0=%lx\n", a0);
    __asm__ volatile ("ebreak");
    __asm__ volatile ("c.ebreak");
    __asm__ volatile (".word 0xffffffff");
    __asm__ volatile (".word 0x0000507b");          /* opcode 0x7b is reserved */
    __asm__ volatile ("csrr t0, 0x7c0" ::: "t0");   /* a CSR nobody implements */
    volatile uint64_t *nowhere = (uint64_t *)0x1000000;
    (void)*nowhere;
    *nowhere = 1;
    printf("%d traps, mstatus.MPP %lx\n", traps, (read_csr(mstatus) >> 11) & 3);
    return traps == 8 ? 0 : 1;
}
