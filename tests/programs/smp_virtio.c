/* virtio-blk through the PLIC on two harts: hart 1 sets the disk up in the
 * first virtio-mmio slot (QEMU: -device virtio-blk-device,bus=virtio-mmio-bus.0)
 * and reads two sectors, each request completed by an interrupt routed to
 * it: for the first it spins on a flag its handler sets, for the second it
 * waits in WFI. Hart 0 spins meanwhile. */
#define HARTS 2
#include "smp.h"

#define BASE 0x10001000UL
#define REG(offset) (*(volatile uint32_t *)(BASE + (offset)))
#define VIRTIO_IRQ 1                    /* slot 0 */
#define QSIZE 4
#include "virtio_mmio.h"

static struct desc desc[QSIZE] __attribute__((aligned(16)));
static struct avail avail __attribute__((aligned(2)));
static struct used used __attribute__((aligned(4)));
static struct header header;
static uint8_t sector[2][512];
static volatile uint8_t request_status;
static volatile int completions, interrupt_status_seen, done;

uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame)
{
    int id = hartid();
    if (cause != CAUSE_MEI)
        unexpected(cause, epc, tval);
    uint32_t source = *PLIC_CLAIM(id);
    if (source == VIRTIO_IRQ) {
        uint32_t status = REG(INTERRUPT_STATUS);
        interrupt_status_seen |= status;
        REG(INTERRUPT_ACK) = status;
        completions++;
    }
    if (source)
        *PLIC_CLAIM(id) = source;
    return epc;
}

static void set_address(int low, void *pointer)
{
    REG(low) = (uint32_t)(uintptr_t)pointer;
    REG(low + 4) = (uint32_t)((uintptr_t)pointer >> 32);
}

static void request(int index, uint64_t number)
{
    header.type = 0;                    /* VIRTIO_BLK_T_IN */
    header.sector = number;
    request_status = 0xff;
    desc[0] = (struct desc){(uintptr_t)&header, sizeof header, 1, 1};
    desc[1] = (struct desc){(uintptr_t)sector[index], 512, 2 | 1, 2};
    desc[2] = (struct desc){(uintptr_t)&request_status, 1, 2, 0};
    avail.ring[avail.idx % QSIZE] = 0;
    __sync_synchronize();
    avail.idx++;
    __sync_synchronize();
    REG(QUEUE_NOTIFY) = 0;
}

static void drive(void)
{
    *PLIC_PRIORITY(VIRTIO_IRQ) = 1;
    *PLIC_THRESHOLD(1) = 0;
    *PLIC_ENABLE(1) = 1u << VIRTIO_IRQ;
    write_csr(mie, MIE_MEIE);
    if (REG(MAGIC_VALUE) != 0x74726976 || REG(DEVICE_ID) != 2) {
        done = -1;
        return;
    }
    REG(STATUS) = 0;
    REG(STATUS) = 1 | 2;                /* ACKNOWLEDGE, DRIVER */
    /* VIRTIO_F_VERSION_1 only. (Feature word 1 is not read: QEMU 7.2 offers
     * VIRTIO_F_RING_RESET there too, hartvm does not.) */
    REG(DRIVER_FEATURES_SEL) = 1;
    REG(DRIVER_FEATURES) = 1;
    REG(DRIVER_FEATURES_SEL) = 0;
    REG(DRIVER_FEATURES) = 0;
    REG(STATUS) = 1 | 2 | 8;            /* FEATURES_OK */
    REG(QUEUE_SEL) = 0;
    REG(QUEUE_NUM) = QSIZE;
    set_address(QUEUE_DESC_LOW, desc);
    set_address(QUEUE_DRIVER_LOW, &avail);
    set_address(QUEUE_DEVICE_LOW, &used);
    REG(QUEUE_READY) = 1;
    REG(STATUS) = 1 | 2 | 8 | 4;        /* DRIVER_OK */

    interrupts_on();
    request(0, 1);
    while (completions < 1)             /* spin for the interrupt */
        ;
    interrupts_off();
    request(1, 2);
    while (completions < 2) {           /* sleep for it: WFI, then take it */
        __asm__ volatile ("wfi");
        interrupts_on();
        interrupts_off();
    }
    done = 1;
}

void hart_main(unsigned long id)
{
    barrier();
    if (id == 1)
        drive();
    for (;;)
        ;
}

int main(void)
{
    barrier();
    while (!done)
        ;
    if (done < 0) {
        puts("no virtio-blk device in slot 0");
        return 1;
    }
    __sync_synchronize();
    printf("%d completions, interrupt status %x, used idx %d, request status %d\n",
           completions, interrupt_status_seen, used.idx, request_status);
    for (int s = 0; s < 2; s++) {
        printf("sector %d: ", s + 1);
        for (int i = 0; i < 40 && sector[s][i] >= ' ' && sector[s][i] < 127; i++)
            putchar(sector[s][i]);
        putchar('\n');
    }
    return 0;
}
