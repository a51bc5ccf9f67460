/* Console input echoed with the guest time it came at, for the tests of
 * --record and --replay (tests/frontends/test_record_replay.py).
 *
 * The hart sleeps in WFI between interrupts: the CLINT timer's, every TICK
 * of guest time, and the UART's (received data, through the PLIC), whose
 * handler takes every byte the UART holds. Each byte is then shown by
 * on_key with the guest time (mtime) and the ticks counted when it was
 * seen, so that the output tells when, in guest time, the input came; 'q'
 * ends the program, 'r' reboots the machine (the test finisher's reset). */
#include "runtime.h"

#define UART ((volatile uint8_t *)0x10000000)
#define RBR 0
#define IER 1
#define LSR 5
#define LSR_DR 0x01
#define IER_RDI 0x01
#define UART_IRQ 10

#define PLIC_PRIORITY ((volatile uint32_t *)0x0c000000)
#define PLIC_ENABLE0 ((volatile uint32_t *)0x0c002000)      /* hart 0, M-mode */
#define PLIC_THRESHOLD0 ((volatile uint32_t *)0x0c200000)
#define PLIC_CLAIM0 ((volatile uint32_t *)0x0c200004)
#define FINISHER ((volatile uint32_t *)0x00100000)
#define FINISHER_RESET 0x7777
#define MTIMECMP0 ((volatile uint64_t *)0x02004000)
#define MTIME ((volatile uint64_t *)0x0200bff8)

#define MIE_MTIE 0x80
#define MIE_MEIE 0x800
#define CAUSE_MTI ((1UL << 63) | 7)
#define CAUSE_MEI ((1UL << 63) | 11)
#define TICK 2000000            /* mtime ticks (10 MHz): 0.2 s of guest time */

static volatile unsigned ticks, received, shown;
static volatile char keys[256];

uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame)
{
    if (cause == CAUSE_MTI) {
        ticks++;
        *MTIMECMP0 += TICK;
    } else if (cause == CAUSE_MEI) {
        uint32_t source = *PLIC_CLAIM0;
        while (UART[LSR] & LSR_DR)
            keys[received++ % sizeof keys] = UART[RBR];
        *PLIC_CLAIM0 = source;
    } else {
        printf("unexpected trap: mcause %lx mepc %lx mtval %lx\n", cause, epc, tval);
        exit(3);
    }
    return epc;
}

/* A function of its own, for the debugger tests' breakpoints. */
void __attribute__((noinline)) on_key(int key, unsigned long time)
{
    printf("key %02x at %lu after %u ticks\n", key, time, ticks);
}

int main(void)
{
    PLIC_PRIORITY[UART_IRQ] = 1;
    *PLIC_THRESHOLD0 = 0;
    *PLIC_ENABLE0 = 1 << UART_IRQ;
    UART[IER] = IER_RDI;
    *MTIMECMP0 = *MTIME + TICK;
    write_csr(mie, MIE_MEIE | MIE_MTIE);
    __asm__ volatile ("csrsi mstatus, 8");
    printf("ready\n");
    for (;;) {
        __asm__ volatile ("wfi");
        while (shown != received) {
            char key = keys[shown++ % sizeof keys];
            on_key(key, *MTIME);
            if (key == 'q') {
                printf("%u ticks\n", ticks);
                return 0;
            }
            if (key == 'r')
                *FINISHER = FINISHER_RESET;
        }
    }
}
