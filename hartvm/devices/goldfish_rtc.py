"""The Goldfish real-time clock of QEMU's virt board (Android emulator RTC).

Registers (QEMU hw/rtc/goldfish_rtc): TIME_LOW at 0x00 (reading it latches
TIME_HIGH at 0x04), alarm at 0x08/0x0C, IRQ_ENABLED 0x10, CLEAR_ALARM 0x14,
ALARM_STATUS 0x18, CLEAR_INTERRUPT 0x1C. The time, in nanoseconds since
the Unix epoch, is ``epoch_ns`` plus the machine's elapsed time, which the
board derives from the instruction count: runs stay reproducible. The alarm
is stored but never fires (Linux does not need it to boot or keep time).
"""

from .base import Device, saved

TIME_LOW = 0x00
TIME_HIGH = 0x04
ALARM_LOW = 0x08
ALARM_HIGH = 0x0C
IRQ_ENABLED = 0x10
CLEAR_ALARM = 0x14
ALARM_STATUS = 0x18
CLEAR_INTERRUPT = 0x1C


class GoldfishRTC(Device):
    access_sizes = frozenset({4})

    def __init__(self, epoch_ns: int, elapsed_ns):
        super().__init__()
        self.epoch_ns = epoch_ns
        self._elapsed_ns = elapsed_ns      # callable: guest nanoseconds since boot
        self.latched_high = 0
        self.alarm = 0
        self.irq_enabled = 0

    def now(self) -> int:
        return self.epoch_ns + self._elapsed_ns()

    def read(self, offset, size):
        if offset == TIME_LOW:
            now = self.now()
            self.latched_high = now >> 32
            return now & 0xFFFFFFFF
        if offset == TIME_HIGH:
            return self.latched_high & 0xFFFFFFFF
        if offset == ALARM_LOW:
            return self.alarm & 0xFFFFFFFF
        if offset == ALARM_HIGH:
            return self.alarm >> 32
        if offset == IRQ_ENABLED:
            return self.irq_enabled
        if offset == ALARM_STATUS:
            return 0
        return self.unknown("read", offset)

    def write(self, offset, size, value):
        if offset == TIME_LOW:
            # Setting the clock: keep the new time, counting on from now.
            self.epoch_ns += ((self.now() >> 32 << 32) | value) - self.now()
        elif offset == TIME_HIGH:
            self.epoch_ns += ((value << 32) | (self.now() & 0xFFFFFFFF)) - self.now()
        elif offset == ALARM_LOW:
            self.alarm = (self.alarm >> 32 << 32) | value
        elif offset == ALARM_HIGH:
            self.alarm = (value << 32) | (self.alarm & 0xFFFFFFFF)
        elif offset == IRQ_ENABLED:
            self.irq_enabled = value & 1
        elif offset not in (CLEAR_ALARM, CLEAR_INTERRUPT):
            self.unknown("write", offset)

    def fdt_node(self, tree, region) -> None:
        tree.device("rtc", region, "google,goldfish-rtc")

    def save(self):
        return {"epoch_ns": self.epoch_ns, "alarm": self.alarm, "irq_enabled": self.irq_enabled,
                "latched_high": self.latched_high}

    def restore(self, state):
        self.epoch_ns = saved(state, "epoch_ns", int, 1 << 64)
        self.alarm = saved(state, "alarm", int) & (2**64 - 1)
        self.irq_enabled = saved(state, "irq_enabled", int) & 1
        self.latched_high = saved(state, "latched_high", int, 1 << 32)
