"""Device interrupts through the PLIC, as QEMU's virt board delivers them.

QEMU's PLIC (hw/intc/sifive_plic.c) latches a source as pending when its
device raises the line, and only then: a line that stays high is not seen
again after a claim and its completion until the device raises it anew;
lowering the line does not take a latched request back. QEMU's 16550
(hw/char/serial.c) raises or lowers its line in ``serial_update_irq``,
which only some register accesses call. So a driver that leaves the
UART's THRE interrupt standing (it reads LSR and RBR, never IIR) gets one
interrupt under QEMU, and must get one under hartvm, not a storm.

tests/programs/uart_irq.c counts the interrupts of each case in a window of
guest time; hartvm must print what QEMU prints and exit as QEMU does.
"""

from conftest import build_c, run_hartvm, run_qemu


def test_uart_interrupts_through_the_plic_match_qemu(toolchain, qemu):
    elf = build_c("uart_irq")
    expected_output, expected_status = run_qemu(qemu, elf)
    # The yardstick itself: one THRE interrupt for a handler that never reads IIR.
    assert b"THRE, LSR only: 1 interrupt(s)\n" in expected_output
    assert expected_status == 0
    result = run_hartvm(elf)
    assert result.stdout.decode() == expected_output.decode()
    assert result.returncode == expected_status
