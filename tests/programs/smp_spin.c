/* Four harts that only spin (no WFI) and hand work to each other: a token
 * passed round a ring with plain loads and stores, then a ticket lock taken
 * with amoadd. Every hand-off needs another hart to run, so the program
 * ends in reasonable time only if spinning harts make way for the others at
 * a fair rate (tests/test_lockstep.py bounds its instructions on hartvm). */
#include "smp.h"

#ifndef ROUNDS
#define ROUNDS 6
#endif

static volatile int token, ticket, serving, finished;
static volatile long ring_sum, lock_sum;
static volatile int order[HARTS * ROUNDS];

static void work(int id)
{
    for (int round = 0; round < ROUNDS; round++) {
        while (token != id)
            ;
        ring_sum += id + 1;
        order[round * HARTS + id] = round * HARTS + id;
        token = (id + 1) % HARTS;
    }
    for (int round = 0; round < ROUNDS; round++) {
        int mine = __atomic_fetch_add(&ticket, 1, __ATOMIC_RELAXED);
        while (__atomic_load_n(&serving, __ATOMIC_ACQUIRE) != mine)
            ;
        lock_sum += (long)(id + 1) << 8;          /* inside the lock: no atomics */
        __atomic_store_n(&serving, mine + 1, __ATOMIC_RELEASE);
    }
    __atomic_fetch_add(&finished, 1, __ATOMIC_RELAXED);
}

void hart_main(unsigned long id)
{
    work(id);
    for (;;)
        ;
}

int main(void)
{
    work(0);
    while (finished != HARTS)
        ;
    int in_order = 1;
    for (int i = 0; i < HARTS * ROUNDS; i++)
        in_order &= order[i] == i;
    printf("ring: %d passes, sum %ld, in order %d\n", HARTS * ROUNDS, ring_sum, in_order);
    printf("ticket lock: %d entries, sum %ld\n", ticket, lock_sum);
    return 0;
}
