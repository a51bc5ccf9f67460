/* What a bare-metal program is handed in its registers: a0 = hart id,
 * a1 = the device tree, which QEMU's virt board places at the top of RAM
 * even without firmware (hw/riscv/virt.c, virt_machine_done ->
 * riscv_load_fdt in hw/riscv/boot.c). crt0.S leaves a0 and a1 alone on
 * the way to main. The program prints the tree's address and header
 * (magic, versions), not its contents, which are each emulator's own. */
#include "runtime.h"

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int main(long hartid, const uint8_t *dtb)
{
    printf("hart %ld, device tree at %lx\n", hartid, (unsigned long)dtb);
    if (!dtb)
        return 1;
    printf("magic %x, version %d, last compatible version %d\n", be32(dtb), be32(dtb + 20),
           be32(dtb + 24));
    return 0;
}
