/* Quicksort of 64-bit keys with insertion sort for short runs: compares, swaps, recursion. */
#include "runtime.h"

#define N 200000
#define ROUNDS 3
static uint64_t keys[N];

static void insertion(uint64_t *a, long n)
{
    for (long i = 1; i < n; i++) {
        uint64_t v = a[i];
        long j = i - 1;
        while (j >= 0 && a[j] > v) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = v;
    }
}

static void quicksort(uint64_t *a, long n)
{
    while (n > 16) {
        uint64_t pivot = a[n / 2];
        long i = 0, j = n - 1;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                uint64_t t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        if (j + 1 < n - i) {
            quicksort(a, j + 1);
            a += i;
            n -= i;
        } else {
            quicksort(a + i, n - i);
            n = j + 1;
        }
    }
    insertion(a, n);
}

int main(void)
{
    uint64_t x = 88172645463325252ULL, sum = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (long i = 0; i < N; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;   /* xorshift64 */
            keys[i] = x;
        }
        quicksort(keys, N);
        for (long i = 1; i < N; i++)
            if (keys[i - 1] > keys[i]) {
                printf("not sorted at %ld\n", i);
                return 1;
            }
        sum += keys[N / 2] >> 32;
    }
    printf("sorted %d keys %d times, checksum %lx\n", N, ROUNDS, sum);
    return 0;
}
