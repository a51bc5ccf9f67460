/* The CLINT as reset leaves it: QEMU 7.2's ACLINT resets every hart's
 * mtimecmp to 0, so mip.MTIP is already set when the program starts (and
 * an MTIE enabled before mtimecmp is written interrupts at once). */
#include "runtime.h"

#define MTIMECMP(h) (*(volatile uint64_t *)(0x2004000UL + 8 * (h)))

int main(void)
{
    printf("mip at start %lx, mtimecmp0 %lx, mtimecmp1 %lx\n", read_csr(mip) & 0x80,
           MTIMECMP(0), MTIMECMP(1));
    MTIMECMP(0) = -1UL;
    printf("mip after mtimecmp0 = -1: %lx\n", read_csr(mip) & 0x80);
    return 0;
}
