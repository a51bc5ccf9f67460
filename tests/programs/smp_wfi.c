/* Harts that wait in WFI instead of spinning: hart 1 sleeps until hart 0
 * wakes it with a software interrupt, then sleeps again; hart 0 then
 * sleeps until its own timer, while hart 1 sleeps too (every hart asleep:
 * only the timer can end it), and wakes hart 1 once more to finish. */
#define HARTS 2
#include "smp.h"

static volatile int software[HARTS], timer, stage;

uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame)
{
    int id = hartid();
    if (cause == CAUSE_MSI) {
        *MSIP(id) = 0;
        software[id]++;
    } else if (cause == CAUSE_MTI) {
        *MTIMECMP(id) = -1UL;
        timer++;
    } else {
        unexpected(cause, epc, tval);
    }
    return epc;
}

void hart_main(unsigned long id)
{
    write_csr(mie, MIE_MSIE);
    interrupts_on();
    barrier();
    while (software[1] < 2)
        __asm__ volatile ("wfi");
    stage = 2;
    for (;;)
        __asm__ volatile ("wfi");
}

int main(void)
{
    *MTIMECMP(0) = -1UL;
    write_csr(mie, MIE_MSIE | MIE_MTIE);
    interrupts_on();
    barrier();
    *MSIP(1) = 1;                       /* wake hart 1 once */
    while (software[1] < 1)
        ;
    *MTIMECMP(0) = *MTIME + 500000;     /* 50 ms: both harts asleep until this timer */
    while (!timer)
        __asm__ volatile ("wfi");
    *MSIP(1) = 1;                       /* and once more: it finishes */
    while (stage != 2)
        ;
    printf("hart 1: %d software interrupts; hart 0: %d timer interrupt\n", software[1], timer);
    return 0;
}
