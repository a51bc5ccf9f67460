/* The A extension through C: __atomic builtins compile to AMOs and LR/SC loops. */
#include "runtime.h"

static long counter;
static int flags;
static long slot;

int main(void)
{
    for (int i = 0; i < 1000; i++)
        __atomic_fetch_add(&counter, i, __ATOMIC_SEQ_CST);
    __atomic_fetch_or(&flags, 0x30, __ATOMIC_RELAXED);
    __atomic_fetch_and(&flags, 0x21, __ATOMIC_RELAXED);
    __atomic_fetch_xor(&flags, 0x101, __ATOMIC_RELAXED);
    long expected = 5, old = __atomic_exchange_n(&slot, 5, __ATOMIC_ACQ_REL);
    int swapped = __atomic_compare_exchange_n(&slot, &expected, 9, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    long expected2 = 5;
    int swapped2 = __atomic_compare_exchange_n(&slot, &expected2, 11, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    printf("counter %ld flags %x old %ld swapped %d %d slot %ld seen %ld\n",
           counter, flags, old, swapped, swapped2, slot, expected2);
    return 0;
}
