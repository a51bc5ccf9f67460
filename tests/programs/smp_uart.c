/* The UART through the PLIC on four harts. Hart 1 sends a line by THRE
 * interrupts (the handler writes each next byte); then hart 2 puts the UART
 * in loopback mode and receives bytes by RX-data interrupts; hart 0 and the
 * idle harts spin (no WFI). The PLIC routes source 10 to one hart's M-mode
 * context at a time. */
#include "smp.h"

#define UART ((volatile uint8_t *)0x10000000UL)
#define RBR 0
#define THR 0
#define IER 1
#define IIR 2
#define MCR 4
#define LSR 5
#define IER_RDI 0x01
#define IER_THRI 0x02
#define MCR_LOOP 0x10
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define UART_IRQ 10

static const char message[] = "THRE by hart 1\n";
static volatile int sent, tx_interrupts, rx_interrupts, received_count, phase;
static volatile char received[16];
static volatile uint8_t iir_seen[4];

uintptr_t handle_trap(uintptr_t cause, uintptr_t epc, uintptr_t tval, uintptr_t *frame)
{
    int id = hartid();
    if (cause != CAUSE_MEI)
        unexpected(cause, epc, tval);
    uint32_t source = *PLIC_CLAIM(id);
    if (source == UART_IRQ) {
        uint8_t iir = UART[IIR] & 0x0f;
        if (iir == 0x02) {                      /* THRE */
            if (tx_interrupts < 4)
                iir_seen[tx_interrupts] = iir;
            tx_interrupts++;
            if (message[sent])
                UART[THR] = message[sent++];
            else
                UART[IER] = 0;
        } else if (iir == 0x04) {               /* received data */
            rx_interrupts++;
            while (UART[LSR] & LSR_DR)
                received[received_count++ & 15] = UART[RBR];
        }
    }
    if (source)
        *PLIC_CLAIM(id) = source;
    return epc;
}

static void route_to(int hart)
{
    for (int h = 0; h < HARTS; h++)
        *PLIC_ENABLE(h) = h == hart ? 1u << UART_IRQ : 0;
}

static void run(int id)
{
    *PLIC_THRESHOLD(id) = 0;
    write_csr(mie, MIE_MEIE);
    interrupts_on();
    barrier();
    if (id == 1) {
        route_to(1);
        UART[IER] = IER_THRI;                   /* THRE is due at once */
        while (message[sent])
            ;
        while (!(UART[LSR] & LSR_THRE))
            ;
        UART[IER] = 0;
        phase = 1;
    } else if (id == 2) {
        while (phase != 1)
            ;
        route_to(2);
        UART[MCR] = MCR_LOOP;
        UART[IER] = IER_RDI;
        for (const char *p = "rx"; *p; p++) {
            int before = rx_interrupts;
            UART[THR] = *p;
            while (rx_interrupts == before)
                ;
        }
        UART[IER] = 0;
        UART[MCR] = 0;
        phase = 2;
    }
    while (phase != 2)
        ;
    barrier();
}

void hart_main(unsigned long id)
{
    run(id);
    for (;;)
        ;
}

int main(void)
{
    *PLIC_PRIORITY(UART_IRQ) = 1;
    route_to(-1);
    run(0);
    printf("%d bytes sent in %d THRE interrupts (IIR %x %x)\n", sent, tx_interrupts,
           iir_seen[0], iir_seen[1]);
    printf("%d RX interrupts, received \"", rx_interrupts);
    for (int i = 0; i < received_count; i++)
        putchar(received[i]);
    printf("\"\n");
    return 0;
}
