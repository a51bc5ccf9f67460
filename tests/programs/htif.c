/* HTIF: console output through the tohost syscall interface and exit status 5. */
#include "runtime.h"

volatile uint64_t tohost __attribute__((section(".tohost"), aligned(8)));
volatile uint64_t fromhost __attribute__((section(".tohost"), aligned(8)));

static void htif_write(const char *text, uint64_t length)
{
    static volatile uint64_t magic[8] __attribute__((aligned(64)));
    magic[0] = 64;          /* SYS_write */
    magic[1] = 1;           /* stdout */
    magic[2] = (uintptr_t)text;
    magic[3] = length;
    tohost = (uintptr_t)magic;
    while (fromhost == 0)
        ;
    fromhost = 0;
}

int main(void)
{
    static const char message[] = "hello through HTIF\n";
    htif_write(message, sizeof message - 1);
    tohost = (5 << 1) | 1;
    for (;;)
        ;
}
