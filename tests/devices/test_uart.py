"""The 16550 UART: output, received bytes, and its interrupt through the PLIC to the hart."""

from hartvm.devices.uart16550 import UART16550

# The trap vector at label 3, and the UART's interrupt (PLIC source 10)
# enabled with priority 1 for hart 0's M-mode context; s8 counts.
UART_IRQ_SETUP = """
    li s8, 0
    la t0, 3f
    csrw mtvec, t0
    li t0, 0x0c000000 + 4 * 10
    li t1, 1
    sw t1, 0(t0)            /* PLIC priority of the UART (source 10) */
    li t0, 0x0c002000
    li t1, 1 << 10
    sw t1, 0(t0)            /* enabled for hart 0, M-mode */
"""


def test_receive_interrupt_reaches_the_hart_through_the_plic(asm_program):
    machine = asm_program(UART_IRQ_SETUP + """
    li t0, 0x10000001
    li t1, 1
    sb t1, 0(t0)            /* UART IER: received data available */
    li t0, 0x800
    csrs mie, t0            /* MEIE */
    csrsi mstatus, 8
1:  wfi
    beqz s8, 1b
    j 4f
    .align 2
3:  csrr s9, mcause
    li t0, 0x0c200004
    lw t1, 0(t0)            /* claim */
    mv s7, t1
    li t2, 0x10000000
    lbu s8, 0(t2)           /* the byte */
    sw t1, 0(t0)            /* complete */
    mret
4:
""")
    machine.board.devices["uart0"].push_input(b"Z")
    machine.run(max_instructions=100_000)
    hart = machine.harts[0]
    assert hart.x(25) == (1 << 63) | 11     # machine external interrupt
    assert hart.x(23) == 10                 # the claim named the UART
    assert hart.x(24) == ord("Z")


def test_registers_and_loopback_overrun():
    out = []
    levels = []
    uart = UART16550(out.append, levels.append)
    uart.write(0, 1, ord("A"))
    assert out == [b"A"]
    assert uart.read(5, 1) & 0x60 == 0x60            # THR empty, transmitter empty
    uart.write(3, 1, 0x80)                           # DLAB: divisor latch
    uart.write(0, 1, 0x34)
    uart.write(1, 1, 0x12)
    assert uart.divisor == 0x1234 and out == [b"A"]
    uart.write(3, 1, 0x03)
    uart.write(4, 1, 0x10)                           # loopback
    for i in range(100):                             # a hostile guest floods it
        uart.write(0, 1, i)
    assert len(uart.rx) == 16
    assert uart.read(5, 1) & 0x03 == 0x03            # data ready, overrun
    assert uart.read(5, 1) & 0x02 == 0               # overrun clears on read
    uart.write(1, 1, 0x01)                           # IER: receive interrupt
    assert levels[-1] is True and uart.read(2, 1) & 0x0F == 0x04
    while uart.rx:
        uart.read(0, 1)
    assert levels[-1] is False


def test_the_line_is_signalled_where_qemu_signals_it():
    """serial_update_irq's callers in QEMU's hw/char/serial.c: each signal is a
    raise the PLIC latches, so an access that signals where QEMU's does not (or
    the reverse) changes how many interrupts a driver sees."""
    signals = []
    uart = UART16550(lambda data: None, signals.append)

    def after(access):
        del signals[:]
        access()
        return list(signals)

    assert after(lambda: uart.write(1, 1, 0x02)) == [True]     # IER: THRE enabled
    assert after(lambda: uart.write(1, 1, 0x02)) == []         # IER unchanged: no signal
    assert after(lambda: uart.read(5, 1)) == []                # LSR, no error to clear
    assert after(lambda: uart.read(0, 1)) == [True]            # RBR, even with no data
    assert after(lambda: uart.write(2, 1, 0x00)) == [True]     # FCR, always
    assert after(lambda: uart.write(3, 1, 0x03)) == []         # LCR
    assert after(lambda: uart.write(7, 1, 0x5A)) == []         # SCR
    assert after(lambda: uart.read(2, 1)) == [False]           # IIR names THRE: cleared
    assert after(lambda: uart.read(2, 1)) == []                # IIR names nothing
    assert after(lambda: uart.write(2, 1, 0x04)) == [True]     # transmit FIFO reset: THRE due
    uart.read(2, 1)
    assert after(lambda: uart.write(2, 1, 0x01)) == [True]     # FIFO enable changed: both reset
    assert after(lambda: uart.write(0, 1, ord("x"))) == [True]  # THR: empty again at once
    assert after(lambda: uart.write(1, 1, 0x00)) == [False]    # IER changed
    assert after(lambda: uart.push_input(b"ab")) == [False]    # received, RDA not enabled
    assert after(lambda: uart.write(1, 1, 0x01)) == [True]     # IER: RDA enabled
    assert after(lambda: uart.read(0, 1)) == [True]            # one byte left
    assert after(lambda: uart.read(0, 1)) == [False]           # none left
    assert after(lambda: uart.push_input(b"")) == []           # nothing received
    uart.write(4, 1, 0x10)                                     # loopback
    for byte in range(17):                                     # one byte too many: overrun
        uart.write(0, 1, byte)
    assert after(lambda: uart.read(5, 1)) == [True]            # LSR clears OE: signalled
    assert after(lambda: uart.read(5, 1)) == []


def test_a_thre_interrupt_left_standing_comes_once(asm_program):
    """A handler that reads LSR but never IIR leaves THRE due: the line stays
    high and no access raises it again, so the PLIC offers it once (QEMU)."""
    machine = asm_program(UART_IRQ_SETUP + """
    li t0, 0x800
    csrs mie, t0            /* MEIE */
    csrsi mstatus, 8
    li t0, 0x10000001
    li t1, 2
    sb t1, 0(t0)            /* UART IER: THRE */
    li t2, 2000
1:  addi t2, t2, -1         /* a storm would trap here again and again */
    bnez t2, 1b
    j 4f
    .align 2
3:  addi s8, s8, 1
    li t0, 0x0c200004
    lw t1, 0(t0)            /* claim */
    li t3, 0x10000005
    lbu t3, 0(t3)           /* LSR only */
    sw t1, 0(t0)            /* complete */
    mret
4:
""")
    machine.run(max_instructions=200_000)
    assert machine.harts[0].x(24) == 1
