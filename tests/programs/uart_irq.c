/* The UART's interrupt through the PLIC, counted: which device accesses signal
 * the PLIC again, and what a claim and a completion do.
 *
 * QEMU's 16550 (hw/char/serial.c) calls serial_update_irq, which raises or
 * lowers its line, on certain register accesses only; QEMU's PLIC
 * (hw/intc/sifive_plic.c) makes a source pending on each raise, not while
 * the line merely stays high. So a THRE interrupt that the handler leaves
 * standing (it never reads IIR) comes once, not as a storm.
 *
 * Each phase enables interrupts, lets the hart sleep (WFI) until the CLINT
 * timer ends a window of WINDOW ticks, and prints how many UART interrupts
 * came; a storm stops at CAP interrupts (the handler then clears IER). The
 * output and exit status must be QEMU's (tests/test_qemu_interrupts.py). */
#include "runtime.h"

#define UART ((volatile uint8_t *)0x10000000)
#define RBR 0
#define THR 0
#define IER 1
#define IIR 2
#define FCR 2
#define LSR 5
#define LSR_DR 0x01
#define IER_RDI 0x01
#define IER_THRI 0x02
#define UART_IRQ 10

#define PLIC_PRIORITY ((volatile uint32_t *)0x0c000000)
#define PLIC_PENDING ((volatile uint32_t *)0x0c001000)
#define PLIC_ENABLE0 ((volatile uint32_t *)0x0c002000)      /* hart 0, M-mode */
#define PLIC_THRESHOLD0 ((volatile uint32_t *)0x0c200000)
#define PLIC_CLAIM0 ((volatile uint32_t *)0x0c200004)

#define MTIMECMP0 ((volatile uint64_t *)0x02004000)
#define MTIME ((volatile uint64_t *)0x0200bff8)

#define MIE_MTIE 0x80
#define MIE_MEIE 0x800
#define CAUSE_MTI ((1UL << 63) | 7)
#define CAUSE_MEI ((1UL << 63) | 11)

#define WINDOW 2000000          /* mtime ticks (10 MHz): 0.2 s of guest time */
#define CAP 1000                /* interrupts a storm may make before it is stopped */

enum mode {
    LSR_ONLY,       /* read LSR, and RBR only while LSR says data is ready */
    RBR_ALWAYS,     /* read LSR and RBR whether or not data is ready */
    IIR_READ,       /* read IIR, as a real driver does */
    TRANSMIT,       /* send the next byte of a message from the handler */
};

static volatile enum mode mode;
static volatile int count, window_over, to_send;
static volatile int claims_inside, pending_before, pending_after;
static volatile int iir_first;

static void complete(uint32_t source)
{
    *PLIC_CLAIM0 = source;
}

uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame)
{
    if (cause == CAUSE_MTI) {
        window_over = 1;
        *MTIMECMP0 = -1UL;
        return epc;
    }
    if (cause != CAUSE_MEI) {
        printf("unexpected trap: mcause %lx mepc %lx mtval %lx\n", cause, epc, tval);
        exit(3);
    }
    uint32_t source = *PLIC_CLAIM0;
    if (source != UART_IRQ) {
        if (source)
            complete(source);
        return epc;
    }
    count++;
    switch (mode) {
    case LSR_ONLY:
        while (UART[LSR] & LSR_DR)
            (void)UART[RBR];
        break;
    case RBR_ALWAYS:
        (void)UART[LSR];
        if (count == 1) {
            pending_before = *PLIC_PENDING;
            (void)UART[RBR];
            pending_after = *PLIC_PENDING;
            claims_inside = *PLIC_CLAIM0;   /* claimed sources are not claimed again */
        } else {
            (void)UART[RBR];
        }
        break;
    case IIR_READ:
        if (count == 1)
            iir_first = UART[IIR];
        else
            (void)UART[IIR];
        break;
    case TRANSMIT:
        (void)UART[LSR];
        if (to_send) {
            to_send--;
            UART[THR] = to_send ? '.' : '\n';
        }
        break;
    }
    if (count >= CAP)
        UART[IER] = 0;
    complete(source);
    return epc;
}

/* Sleep through one window; wait_for_first: return as soon as one interrupt came. */
static void sleep_window(int wait_for_first)
{
    window_over = 0;
    *MTIMECMP0 = *MTIME + WINDOW;
    while (!window_over && !(wait_for_first && count))
        __asm__ volatile ("wfi");
}

static void start(enum mode m, uint8_t ier)
{
    mode = m;
    count = 0;
    UART[IER] = ier;
}

static int stop(void)
{
    UART[IER] = 0;
    *MTIMECMP0 = -1UL;
    return count;
}

int main(void)
{
    PLIC_PRIORITY[UART_IRQ] = 1;
    *PLIC_THRESHOLD0 = 0;
    *PLIC_ENABLE0 = 1 << UART_IRQ;
    *MTIMECMP0 = -1UL;
    write_csr(mie, MIE_MEIE | MIE_MTIE);
    __asm__ volatile ("csrsi mstatus, 8");

    /* The handler never reads IIR: the UART keeps its THRE interrupt, its
     * line stays high, and no access signals it again. */
    start(LSR_ONLY, IER_THRI);
    sleep_window(0);
    printf("THRE, LSR only: %d interrupt(s)\n", stop());

    /* Reading RBR signals the line each time (serial_update_irq): the source
     * pends again while claimed, and comes back at each completion. */
    start(RBR_ALWAYS, IER_THRI);
    sleep_window(0);
    printf("THRE, RBR read each time: %d interrupt(s)\n", stop());
    printf("  pending before RBR %x, after %x; claim while claimed %d\n",
           pending_before, pending_after, claims_inside);

    /* Reading IIR while it names THRE clears the interrupt. */
    start(IIR_READ, IER_THRI);
    sleep_window(0);
    printf("THRE, IIR read: %d interrupt(s), IIR %x\n", stop(), iir_first & 0x0f);

    /* Interrupt-driven output: each byte written to THR signals THRE anew. */
    to_send = 8;
    start(TRANSMIT, IER_THRI);
    sleep_window(0);
    printf("transmit from the handler: %d interrupt(s)\n", stop());

    /* Accesses from the program while the THRE interrupt stands unserved. */
    start(LSR_ONLY, IER_THRI);
    sleep_window(1);
    UART[IER] = IER_THRI;               /* the same value: no change, no signal */
    sleep_window(0);
    printf("IER rewritten unchanged: %d interrupt(s)\n", stop());

    start(LSR_ONLY, IER_THRI);
    sleep_window(1);
    UART[IER] = IER_THRI | IER_RDI;     /* a change: signalled */
    sleep_window(0);
    printf("IER changed: %d interrupt(s)\n", stop());

    start(LSR_ONLY, IER_THRI);
    sleep_window(1);
    UART[FCR] = 0;                      /* FCR writes always signal */
    sleep_window(0);
    printf("FCR written: %d interrupt(s)\n", stop());

    /* THRE cleared by an IIR read, then due again: a transmit-FIFO reset,
     * or a change of the FIFO enable bit (which resets both FIFOs). */
    start(IIR_READ, IER_THRI);
    sleep_window(1);
    UART[FCR] = 0x04;
    sleep_window(0);
    printf("IIR read, then transmit FIFO reset: %d interrupt(s)\n", stop());

    start(IIR_READ, IER_THRI);
    sleep_window(1);
    UART[FCR] = 0x01;
    sleep_window(0);
    printf("IIR read, then FIFO enabled: %d interrupt(s)\n", stop());
    UART[FCR] = 0;

    start(LSR_ONLY, IER_THRI);
    sleep_window(1);
    (void)UART[LSR];                    /* LSR without an error to clear: no signal */
    (void)UART[LSR];
    sleep_window(0);
    printf("LSR read: %d interrupt(s)\n", stop());

    /* Lowering the line does not take back a request the PLIC has latched:
     * IER cleared, or IIR read while it names THRE, before the claim. */
    write_csr(mie, MIE_MTIE);
    start(LSR_ONLY, IER_THRI);
    int raised = *PLIC_PENDING;
    UART[IER] = 0;
    int lowered = *PLIC_PENDING;
    write_csr(mie, MIE_MEIE | MIE_MTIE);
    sleep_window(0);
    printf("IER cleared before the claim (pending %x, then %x): %d interrupt(s)\n",
           raised, lowered, stop());

    write_csr(mie, MIE_MTIE);
    start(LSR_ONLY, IER_THRI);
    int iir = UART[IIR];
    int after_iir = *PLIC_PENDING;
    write_csr(mie, MIE_MEIE | MIE_MTIE);
    sleep_window(0);
    printf("IIR %x read before the claim (pending %x): %d interrupt(s)\n",
           iir & 0x0f, after_iir, stop());

    /* A completion while the source is disabled for the context still ends
     * its claim. */
    write_csr(mie, MIE_MTIE);
    start(LSR_ONLY, IER_THRI);
    uint32_t claimed = *PLIC_CLAIM0;
    *PLIC_ENABLE0 = 0;
    complete(claimed);
    *PLIC_ENABLE0 = 1 << UART_IRQ;
    UART[IER] = 0;
    UART[IER] = IER_THRI;               /* signals again */
    write_csr(mie, MIE_MEIE | MIE_MTIE);
    sleep_window(0);
    printf("claimed %d, completed while disabled: %d interrupt(s)\n", (int)claimed, stop());

    /* A completion of a source that was never claimed changes nothing. */
    complete(UART_IRQ);
    complete(0);
    complete(95);
    printf("claim when nothing pends: %d\n", (int)*PLIC_CLAIM0);
    return 0;
}
