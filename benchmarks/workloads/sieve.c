/* Sieve of Eratosthenes: byte-array stores, loads and tight loops. */
#include "runtime.h"

#define LIMIT 2000000
#define ROUNDS 6
static uint8_t composite[LIMIT + 1];

int main(void)
{
    unsigned long count = 0;
    for (int round = 0; round < ROUNDS; round++) {
        memset(composite, 0, sizeof composite);
        count = 0;
        for (unsigned long i = 2; i <= LIMIT; i++) {
            if (composite[i])
                continue;
            count++;
            for (unsigned long j = i * i; j <= LIMIT; j += i)
                composite[j] = 1;
        }
    }
    printf("primes below %d: %lu\n", LIMIT, count);
    return count == 148933 ? 0 : 1;
}
