/* A program for the GDB stub's tests (tests/frontends/test_gdbstub.py): built
   with debug info and without optimisation, so that its variables are where
   the debugger looks for them. */
#include "runtime.h"

volatile long total;
long squares[8];

__attribute__((noinline)) long add_square(long i)
{
    squares[i] = i * i;
    total += squares[i];
    return total;
}

int main(void)
{
    for (long i = 0; i < 8; i++)
        add_square(i);
    printf("total %ld\n", total);
    return 0;
}
