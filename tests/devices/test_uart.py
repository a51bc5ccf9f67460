"""The 16550 UART: output, received bytes, and its interrupt through the PLIC to the hart."""

from hartvm.devices.uart16550 import UART16550


def test_receive_interrupt_reaches_the_hart_through_the_plic(asm_program):
    machine = asm_program("""
    li s8, 0
    la t0, 3f
    csrw mtvec, t0
    li t0, 0x0c000000 + 4 * 10
    li t1, 1
    sw t1, 0(t0)            /* PLIC priority of the UART (source 10) */
    li t0, 0x0c002000
    li t1, 1 << 10
    sw t1, 0(t0)            /* enable it for hart 0, M-mode */
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
