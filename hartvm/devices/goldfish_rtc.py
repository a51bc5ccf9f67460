"""The Goldfish real-time clock of QEMU's virt board (Android emulator RTC).

Registers (QEMU hw/rtc/goldfish_rtc.c): TIME_LOW at 0x00 (reading it latches
TIME_HIGH at 0x04), alarm at 0x08/0x0C, IRQ_ENABLED 0x10, CLEAR_ALARM 0x14,
ALARM_STATUS 0x18, CLEAR_INTERRUPT 0x1C. The time, in nanoseconds since
the Unix epoch, is ``epoch_ns`` plus the machine's elapsed time, which the
board derives from the instruction count: runs stay reproducible.

The alarm works as QEMU's: writing ALARM_LOW arms it for the time in
ALARM_HIGH:ALARM_LOW (ALARM_HIGH alone only stores), and an alarm already
due fires at once. Firing latches a pending interrupt; the PLIC line is
high while the interrupt is pending and enabled, until CLEAR_INTERRUPT.
ALARM_STATUS reads 1 while an alarm is armed; CLEAR_ALARM disarms it. QEMU
arms a timer on its RTC clock, ``alarm - tick_offset``, so setting the time
afterwards does not move it: here the alarm is held, the same way, as the
elapsed time at which it fires (``alarm_deadline``). The machine asks for
that deadline (``next_event_ns``), so a hart waiting in WFI wakes for it,
and calls ``expire`` when it is reached.
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

MASK64 = 2**64 - 1      # QEMU's counts are uint64_t: they wrap, as here


class GoldfishRTC(Device):
    access_sizes = frozenset({4})

    def __init__(self, epoch_ns: int, elapsed_ns, set_irq=None):
        """``elapsed_ns()``: guest nanoseconds since reset; ``set_irq(level)``:
        the PLIC line."""
        super().__init__()
        self.epoch_ns = epoch_ns & MASK64
        self._elapsed_ns = elapsed_ns      # callable: guest nanoseconds since boot
        self._set_irq = set_irq
        self.latched_high = 0
        self._power_on()          # no line to drive yet: the PLIC may not exist

    def _power_on(self) -> None:
        self.alarm = 0
        self.alarm_deadline: int | None = None   # elapsed ns at which the armed alarm fires
        self.irq_pending = 0
        self.irq_enabled = 0

    def reset(self) -> None:
        """As QEMU's goldfish_rtc_reset: the alarm and the interrupt, not the time."""
        self._power_on()
        self._update_irq()

    def now(self) -> int:
        return (self.epoch_ns + self._elapsed_ns()) & MASK64

    # --- the alarm (QEMU goldfish_rtc_set_alarm, _clear_alarm, _interrupt) ----------
    def next_event_ns(self) -> int | None:
        """The elapsed time at which the armed alarm fires, or None."""
        return self.alarm_deadline

    def expire(self) -> None:
        """Fire the alarm if its time has come (the machine calls this when it has)."""
        if self.alarm_deadline is not None and self._elapsed_ns() >= self.alarm_deadline:
            self._fire()

    def _set_alarm(self) -> None:
        now = self.now()
        if self.alarm <= now:
            self._fire()
        else:
            # QEMU: timer_mod(timer, alarm - tick_offset) on the RTC clock,
            # which is what elapsed time is here.
            self.alarm_deadline = min(self._elapsed_ns() + self.alarm - now, MASK64)

    def _fire(self) -> None:
        self.alarm_deadline = None
        self.irq_pending = 1
        self._update_irq()

    def _update_irq(self) -> None:
        if self._set_irq is not None:
            self._set_irq(bool(self.irq_pending & self.irq_enabled))

    # --- registers ----------------------------------------------------------------
    def read(self, offset, size):
        self.expire()          # what the guest reads is never behind its clock
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
            return int(self.alarm_deadline is not None)
        return self.unknown("read", offset)

    def write(self, offset, size, value):
        self.expire()
        if offset == TIME_LOW:
            # Setting the clock: keep the new time, counting on from now.
            now = self.now()
            self.epoch_ns = (self.epoch_ns + ((now >> 32 << 32) | value) - now) & MASK64
        elif offset == TIME_HIGH:
            now = self.now()
            self.epoch_ns = (self.epoch_ns + ((value << 32) | (now & 0xFFFFFFFF)) - now) & MASK64
        elif offset == ALARM_LOW:
            self.alarm = (self.alarm >> 32 << 32) | value
            self._set_alarm()
        elif offset == ALARM_HIGH:
            self.alarm = (value << 32) | (self.alarm & 0xFFFFFFFF)
        elif offset == IRQ_ENABLED:
            self.irq_enabled = value & 1
            self._update_irq()
        elif offset == CLEAR_ALARM:
            self.alarm_deadline = None
        elif offset == CLEAR_INTERRUPT:
            self.irq_pending = 0
            self._update_irq()
        else:
            self.unknown("write", offset)

    def fdt_node(self, tree, region) -> None:
        tree.device("rtc", region, "google,goldfish-rtc")

    # --- snapshots ------------------------------------------------------------------
    SAVE_VERSION = 2    # 2: the alarm runs (alarm_running, alarm_deadline_ns, irq_pending)

    def save(self):
        return {"epoch_ns": self.epoch_ns, "alarm": self.alarm, "irq_enabled": self.irq_enabled,
                "latched_high": self.latched_high, "irq_pending": self.irq_pending,
                "alarm_running": int(self.alarm_deadline is not None),
                "alarm_deadline_ns": 0 if self.alarm_deadline is None else self.alarm_deadline}

    def restore(self, state):
        self.epoch_ns = saved(state, "epoch_ns", int, 1 << 64)
        self.alarm = saved(state, "alarm", int) & MASK64
        self.irq_enabled = saved(state, "irq_enabled", int) & 1
        self.latched_high = saved(state, "latched_high", int, 1 << 32)
        self.irq_pending = saved(state, "irq_pending", int) & 1
        running = saved(state, "alarm_running", int, 2)
        deadline = saved(state, "alarm_deadline_ns", int, 1 << 64)
        self.alarm_deadline = deadline if running else None
        self._update_irq()
