/* A virtio-blk driver that negotiates feature word 0 only, as a driver
 * written for legacy virtio does: it never selects word 1, so it never
 * accepts VIRTIO_F_VERSION_1 (bit 32). QEMU's virtio-mmio (version 2)
 * still lets FEATURES_OK stick (hw/virtio/virtio.c, virtio_set_status
 * validates features only once VERSION_1 was negotiated) and drops the
 * bits it did not offer (virtio_set_features_nocheck). The program finds
 * the disk by scanning the eight virtio-mmio slots for DeviceID 2 (QEMU
 * fills them from the last slot down, hartvm from the first up), reads
 * sector 1 by polling the used ring, and prints what it saw. */
#include "runtime.h"

#define SLOT0 0x10001000UL
#define SLOTS 8
#define REG(base, offset) (*(volatile uint32_t *)((base) + (offset)))

#define BLK_F_BARRIER (1u << 0)     /* legacy only: offered by neither */
#define BLK_F_FLUSH (1u << 9)
#define QSIZE 8
#include "virtio_mmio.h"

static struct desc desc[QSIZE] __attribute__((aligned(16)));
static struct avail avail __attribute__((aligned(2)));
static struct used used __attribute__((aligned(4)));
static struct header header;
static uint8_t sector[512];
static volatile uint8_t request_status;

static void set_address(uintptr_t base, int low, void *pointer)
{
    REG(base, low) = (uint32_t)(uintptr_t)pointer;
    REG(base, low + 4) = (uint32_t)((uintptr_t)pointer >> 32);
}

/* Reset, ACKNOWLEDGE, DRIVER, then write word 0 of the driver features and
 * set FEATURES_OK: returns the status the device then reports. */
static uint32_t negotiate(uintptr_t base, uint32_t word0)
{
    REG(base, STATUS) = 0;
    REG(base, STATUS) = ACKNOWLEDGE;
    REG(base, STATUS) = ACKNOWLEDGE | DRIVER;
    REG(base, DRIVER_FEATURES_SEL) = 0;
    REG(base, DRIVER_FEATURES) = word0;
    REG(base, STATUS) = ACKNOWLEDGE | DRIVER | FEATURES_OK;
    return REG(base, STATUS);
}

int main(void)
{
    uintptr_t base = 0;
    for (int slot = 0; slot < SLOTS; slot++) {
        uintptr_t at = SLOT0 + slot * 0x1000UL;
        if (REG(at, MAGIC_VALUE) == 0x74726976 && REG(at, DEVICE_ID) == 2)
            base = at;
    }
    if (!base) {
        puts("no virtio-blk device");
        return 1;
    }
    printf("virtio-blk found, transport version %d\n", REG(base, VERSION));
    REG(base, DEVICE_FEATURES_SEL) = 0;
    uint32_t offered = REG(base, DEVICE_FEATURES);

    /* A bit the device did not offer: QEMU drops it and accepts the rest. */
    printf("status with an unoffered bit: %x\n", negotiate(base, BLK_F_BARRIER));
    uint32_t status = negotiate(base, offered & BLK_F_FLUSH);
    printf("status with word 0 only: %x\n", status);
    if (!(status & FEATURES_OK))
        return 2;

    REG(base, QUEUE_SEL) = 0;
    if (REG(base, QUEUE_NUM_MAX) < QSIZE) {
        puts("queue too small");
        return 3;
    }
    REG(base, QUEUE_NUM) = QSIZE;
    set_address(base, QUEUE_DESC_LOW, desc);
    set_address(base, QUEUE_DRIVER_LOW, &avail);
    set_address(base, QUEUE_DEVICE_LOW, &used);
    REG(base, QUEUE_READY) = 1;
    REG(base, STATUS) = status | DRIVER_OK;
    printf("status after DRIVER_OK: %x, queue ready %d\n", REG(base, STATUS),
           REG(base, QUEUE_READY));
    uint64_t capacity = REG(base, CONFIG) | (uint64_t)REG(base, CONFIG + 4) << 32;
    printf("capacity %lu sectors\n", capacity);

    header.type = 0;                          /* VIRTIO_BLK_T_IN */
    header.sector = 1;
    request_status = 0xff;
    desc[0] = (struct desc){(uintptr_t)&header, sizeof header, DESC_F_NEXT, 1};
    desc[1] = (struct desc){(uintptr_t)sector, sizeof sector, DESC_F_WRITE | DESC_F_NEXT, 2};
    desc[2] = (struct desc){(uintptr_t)&request_status, 1, DESC_F_WRITE, 0};
    avail.ring[0] = 0;
    __sync_synchronize();
    avail.idx = 1;
    __sync_synchronize();
    REG(base, QUEUE_NOTIFY) = 0;
    for (long spins = 0; *(volatile uint16_t *)&used.idx == 0; spins++)
        if (spins > 100000000) {
            puts("no answer");
            return 4;
        }
    __sync_synchronize();
    printf("used idx %d, id %d, len %d, request status %d\n", used.idx, used.ring[0].id,
           used.ring[0].len, request_status);
    printf("interrupt status %x\n", REG(base, INTERRUPT_STATUS));
    REG(base, INTERRUPT_ACK) = REG(base, INTERRUPT_STATUS);
    printf("interrupt status after ack %x\n", REG(base, INTERRUPT_STATUS));
    printf("sector 1: ");
    for (int i = 0; i < 64 && sector[i] >= ' ' && sector[i] < 127; i++)
        putchar(sector[i]);
    putchar('\n');
    return 0;
}
