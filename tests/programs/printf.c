/* Console output: printf formats, long lines, every printable byte. */
#include "runtime.h"

int main(void)
{
    printf("decimal %d %d %u %ld\n", 0, -42, 4000000000u, -1234567890123L);
    printf("hex %x %lx %08x %X\n", 0xbeef, 0x123456789abcdefUL, 0x1f, 0xcafe);
    printf("string [%s] char [%c] percent [%%]\n", "hartvm", 'Z');
    printf("padded [%5d] [%05d] [%-3d]\n", 42, 42, 7);
    for (int c = 32; c < 127; c++)
        putchar(c);
    putchar('\n');
    puts("the end");
    return 0;
}
