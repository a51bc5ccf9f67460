/* An ELF with loadable segments outside RAM (see outside_ram.ld): QEMU
 * loads what lies in RAM or in the boot ROM and drops the rest without a
 * word (hw/core/loader.c: each segment becomes a ROM blob, written by
 * address_space_write_rom, which skips what is neither RAM nor ROM). The
 * program prints what it finds where those segments went. */
#include "runtime.h"

#define RAM_END 0x88000000UL         /* -m 128M */

int main(void)
{
    puts("running, with a segment below RAM");
    volatile uint32_t *tail = (volatile uint32_t *)(RAM_END - 16);
    printf("last words of RAM: %x %x %x %x\n", tail[0], tail[1], tail[2], tail[3]);
    volatile uint32_t *rom = (volatile uint32_t *)0x8000UL;
    printf("boot ROM at 0x8000: %x %x\n", rom[0], rom[1]);
    return 0;
}
