/* Two harts for the multi-hart debugging tests (tests/vmm/test_reverse_smp.py):
   each adds to its own count, both to a shared total with an atomic add, over
   enough rounds of the machine's schedule that how the harts interleave matters. */
#include "runtime.h"

volatile long counts[2];
volatile long shared;
volatile int finished;

__attribute__((noinline)) void work(unsigned long hart, long i)
{
    counts[hart] += i;
    __atomic_fetch_add(&shared, i * (long)(hart + 1), __ATOMIC_SEQ_CST);
}

void hart_main(unsigned long hartid)
{
    for (long i = 0; i < 200000; i++)
        work(hartid, i);
    finished = 1;
}

int main(void)
{
    for (long i = 0; i < 200000; i++)
        work(0, i);
    while (!finished)
        ;
    printf("%ld %ld %ld\n", counts[0], counts[1], shared);
    return 0;
}
