/* The CLINT through interrupts on four harts: software interrupts (msip)
 * passed round a ring of harts, each handler clearing its own msip and
 * setting the next hart's; then each hart's own timer (mtimecmp) once.
 * Waiting harts spin on flags (no WFI). */
#include "smp.h"

#define RINGS 2

static volatile int software[HARTS], timer[HARTS], rings_done;

uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame)
{
    int id = hartid();
    if (cause == CAUSE_MSI) {
        *MSIP(id) = 0;
        software[id]++;
        if (id != 0)
            *MSIP((id + 1) % HARTS) = 1;      /* on round the ring */
        else
            rings_done++;
    } else if (cause == CAUSE_MTI) {
        *MTIMECMP(id) = -1UL;
        timer[id]++;
    } else {
        unexpected(cause, epc, tval);
    }
    return epc;
}

static void run(int id)
{
    *MTIMECMP(id) = -1UL;
    write_csr(mie, MIE_MSIE | MIE_MTIE);
    interrupts_on();
    barrier();
    if (id == 0) {
        for (int ring = 0; ring < RINGS; ring++) {
            int before = rings_done;
            *MSIP(1) = 1;
            while (rings_done == before)
                ;
        }
    }
    barrier();
    /* Each hart's timer, due a little later for each hart. */
    *MTIMECMP(id) = *MTIME + 200 + 100 * id;
    while (!timer[id])
        ;
    barrier();
}

void hart_main(unsigned long id)
{
    run(id);
    for (;;)
        ;
}

int main(void)
{
    run(0);
    for (int h = 0; h < HARTS; h++)
        printf("hart %d: %d msi, %d mti\n", h, software[h], timer[h]);
    uint32_t msip = 0;
    for (int h = 0; h < HARTS; h++)
        msip |= *MSIP(h) << h;
    printf("msip left set: %x; mip now %lx\n", msip, read_csr(mip) & 0x888);
    return 0;
}
