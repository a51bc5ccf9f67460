"""The Goldfish RTC's alarm, register by register, as QEMU's hw/rtc/goldfish_rtc.c.

The program in tests/programs/rtc_alarm.c compares a guest's view with
QEMU's (tests/test_qemu_fidelity.py); these check what a guest cannot
easily see: when exactly the alarm is due, and what a reset leaves.
"""

from hartvm.devices import goldfish_rtc as rtc
from hartvm.devices.goldfish_rtc import GoldfishRTC

EPOCH_NS = 1_700_000_000 * 10**9


def make(clock, irqs):
    return GoldfishRTC(EPOCH_NS, lambda: clock[0], irqs.append)


def set_alarm(device, when):
    device.write(rtc.ALARM_HIGH, 4, when >> 32)
    device.write(rtc.ALARM_LOW, 4, when & 0xFFFFFFFF)


def test_alarm_is_due_at_its_time_and_fires_once():
    clock, irqs = [1000], []
    device = make(clock, irqs)
    device.write(rtc.IRQ_ENABLED, 4, 1)
    set_alarm(device, EPOCH_NS + 5000)
    assert device.next_event_ns() == 5000 and device.read(rtc.ALARM_STATUS, 4) == 1
    clock[0] = 4999
    device.expire()
    assert irqs[-1] is False and device.read(rtc.ALARM_STATUS, 4) == 1
    clock[0] = 5000
    device.expire()
    assert irqs[-1] is True and device.next_event_ns() is None
    assert device.read(rtc.ALARM_STATUS, 4) == 0


def test_setting_the_time_does_not_move_an_armed_alarm():
    """QEMU arms its timer at alarm - tick_offset on the RTC clock: a later
    change of the time leaves the timer where it was."""
    clock, irqs = [0], []
    device = make(clock, irqs)
    set_alarm(device, EPOCH_NS + 10**9)
    device.write(rtc.TIME_HIGH, 4, (EPOCH_NS + 5 * 10**9) >> 32)   # the time jumps ahead
    assert device.read(rtc.ALARM_STATUS, 4) == 1
    assert device.next_event_ns() == 10**9


def test_setting_the_time_before_the_epoch_wraps_as_qemus_uint64():
    clock, irqs = [5 * 10**9], []
    device = make(clock, irqs)
    device.write(rtc.TIME_HIGH, 4, 0)
    device.write(rtc.TIME_LOW, 4, 0)
    assert device.now() == 0
    assert 0 <= device.save()["epoch_ns"] < 1 << 64      # a snapshot can take it
    clock[0] += 3
    assert device.read(rtc.TIME_LOW, 4) == 3


def test_reset_disarms_and_lowers_the_line_but_keeps_the_time():
    clock, irqs = [0], []
    device = make(clock, irqs)
    device.write(rtc.IRQ_ENABLED, 4, 1)
    set_alarm(device, 1)                                 # long past: fires at once
    set_alarm(device, EPOCH_NS + 10**9)
    assert irqs[-1] is True and device.read(rtc.ALARM_STATUS, 4) == 1
    time = device.now()
    device.reset()
    assert irqs[-1] is False and device.next_event_ns() is None
    assert [device.read(offset, 4) for offset in (rtc.ALARM_LOW, rtc.ALARM_HIGH,
                                                   rtc.IRQ_ENABLED, rtc.ALARM_STATUS)] == [0] * 4
    assert device.now() == time


ALARM_IN_WFI = """
    li t0, 0x0c000000
    li t1, 1
    sw t1, 44(t0)               /* PLIC priority of source 11 */
    li t0, 0x0c002000
    li t1, 0x800
    sw t1, 0(t0)                /* enabled for hart 0's M-mode */
    li t0, 0x101000
    li t1, 1
    sw t1, 0x10(t0)             /* IRQ_ENABLED */
    csrr s2, mcycle
    lwu t2, 0(t0)               /* TIME_LOW, then the latched TIME_HIGH */
    lwu t3, 4(t0)
    slli t3, t3, 32
    or t2, t2, t3
    li t4, 1000000              /* 1 ms ahead */
    add t2, t2, t4
    srli t3, t2, 32
    sw t3, 0xc(t0)              /* ALARM_HIGH */
    sw t2, 8(t0)                /* ALARM_LOW: armed */
    li t1, 0x800
    csrw mie, t1                /* MEIE; mstatus.MIE stays 0 */
1:  wfi
    csrr t1, mip
    srli t1, t1, 11
    andi t1, t1, 1
    beqz t1, 1b
    csrr s1, mcycle
"""


def test_alarm_wakes_a_hart_in_wfi_at_its_time(asm_program):
    """The hart sleeps through the millisecond (time skips: a few instructions
    run) and wakes at the alarm's cycle: 100,000 cycles at 100 MHz after the
    time was read, within the timer's tick (10 cycles) and the instructions
    around the WFI."""
    machine = asm_program(ALARM_IN_WFI)
    result = machine.run(max_instructions=100_000)
    hart = machine.harts[0]
    assert result.status == 0 and result.instructions < 100
    assert 99_990 <= hart.x(9) - hart.x(18) < 100_030           # s1 - s2, in cycles
