/* The bare-metal demo of `make run`: prints through the UART, computes a
 * little, reads the counters and ends through the test finisher. */
#include "runtime.h"

static unsigned long fib(unsigned n)
{
    unsigned long a = 0, b = 1;
    while (n--) {
        unsigned long t = a + b;
        a = b;
        b = t;
    }
    return a;
}

int main(void)
{
    printf("Hello from a bare-metal RISC-V program on hartvm!\n");
    printf("misa = %lx, mhartid = %lu\n", read_csr(misa), read_csr(mhartid));
    for (unsigned n = 10; n <= 90; n += 20)
        printf("fib(%u) = %lu\n", n, fib(n));
    printf("instructions retired so far: %lu\n", read_csr(minstret));
    return 0;
}
