/* Integer arithmetic through the C compiler: 128-bit products, division edge cases. */
#include "runtime.h"

static volatile long values[] = {0, 1, -1, 7, -7, 0x7fffffffffffffffL, (long)0x8000000000000000UL,
                                 0x100000000L, -0x80000000L, 123456789L};
#define N (sizeof values / sizeof values[0])

int main(void)
{
    unsigned long hash = 1469598103934665603UL;
    for (unsigned i = 0; i < N; i++)
        for (unsigned j = 0; j < N; j++) {
            long a = values[i], b = values[j];
            unsigned long r[8];
            r[0] = (unsigned long)(((__int128)a * b) >> 64);
            r[1] = (unsigned long)(((unsigned __int128)(unsigned long)a * (unsigned long)b) >> 64);
            r[2] = b ? (unsigned long)(a == (long)0x8000000000000000UL && b == -1 ? a : a / b) : 0;
            r[3] = b ? (unsigned long)(b == -1 ? 0 : a % b) : 0;
            r[4] = b ? (unsigned long)a / (unsigned long)b : 0;
            r[5] = (unsigned long)(long)((int)a * (int)b);
            r[6] = (unsigned long)a << (b & 63);
            r[7] = (unsigned long)(a >> (b & 63));
            for (int k = 0; k < 8; k++)
                hash = (hash ^ r[k]) * 1099511628211UL;
        }
    printf("arith hash %lx\n", hash);
    return 0;
}
