"""The machine: a board, its harts and the run loop that serves their exits.

``Machine.run`` is the vCPU loop of ARCHITECTURE.md. Harts take turns in
rounds of ``QUANTUM`` cycles (deterministic round-robin): each hart's
compiled ``run`` is called with a budget that ends at the round's end, and
what comes back is handled here (MMIO to the bus, WFI, HTIF). A hart in WFI
sleeps until an interrupt is pending for it; its cycle counter, which is
also its clock (mtime), moves with the round, or straight to its timer
deadline. A device's timer (the RTC alarm, ``board.next_event_ns``) is a
deadline too: harts run up to its cycle, then the device acts. When every
hart sleeps, time skips to the earliest deadline, so idle guests cost
nothing and runs stay reproducible. In realtime mode (an
interactive console) those skips take real time instead, and host input
can end them.

The machine's one way in and out is its ``HostIO`` (hostio.py): console
output, host input for each device, wake-ups, time and the trace.
``run(until, max_instructions)`` returns why it stopped; ``until()`` is
the front end's stop condition, checked between rounds and whenever a
wake-up descriptor is readable.

Two ways to boot, as QEMU: ``load_kernel`` runs a bare-metal ELF in M-mode
(``--bios none``); ``boot`` loads firmware (OpenSBI), a kernel, an initrd
and a device tree the way QEMU's virt machine does (board/boot.py).
"""

import enum
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Callable

from .board.boot import LinuxBoot, bare_metal_fdt
from .board.virt import MEMORY_MAP, VirtBoard
from .cpu import layout as L
from .cpu.csr import mtime
from .cpu.hart import Hart
from .cpu.mmu import tlb_flush
from .cpu.trap import effective_mip
from .devices.htif import HTIF
from .hooks import Hook, Hooks
from .hostio import HostIO
from .errors import HartvmError, quoted
from . import limits
from .limits import DEFAULT_MEMORY, check_harts
from .loader.image import Blob, load_file

QUANTUM = 100_000        # cycles each hart runs per round (1 ms of guest time at 100 MHz)
SLICE = 1_000_000        # one hart: cycles per call into the compiled loop
# A WFI whose timer is further away than this many mtime ticks (2^53 at 10 MHz:
# about 28.5 years of guest time) waits forever: mtimecmp is disarmed.
MAX_SLEEP_TICKS = 1 << 53
DEFAULT_RTC_EPOCH_NS = 1_767_225_600 * 10**9   # 2026-01-01T00:00:00Z
DEFAULT_RNG_SEED = bytes(range(1, 33))         # fixed, so that runs are reproducible
IDLE_POLL = 0.25         # seconds between checks of the stop condition while waiting for the host


class Stop(enum.Enum):
    EXITED = "exited"                  # the guest ended with an exit status
    INSTRUCTION_LIMIT = "limit"        # max_instructions was reached
    HALTED = "halted"                  # every hart waits with nothing to wake it
    STOPPED = "stopped"                # the front end's until() said so
    BREAKPOINT = "breakpoint"          # a hart reached an ebreak while debugged (breakpoint_hart)
    HOOK = "hook"                      # a hook called stop() (hooks.py)


@dataclass
class RunResult:
    stop: Stop
    status: int = 0                    # the guest's exit status for Stop.EXITED
    instructions: int = 0


def _timer_cycle(state, compare: int) -> int | None:
    """The cycle at which the hart's mtime reaches the timer compare value
    ``compare`` (unsigned; now, if it has), or None if that is too far away to
    ever come (a disarmed timer, e.g. -1)."""
    now = int(mtime(state)) & (2**64 - 1)
    cycle = int(state[L.CYCLE])
    if compare <= now:
        return cycle
    if compare - now > MAX_SLEEP_TICKS:
        return None
    return cycle + (compare - now) * L.CYCLES_PER_TICK - cycle % L.CYCLES_PER_TICK


def _check_memory_file(fd, size: int) -> None:
    """``memory_fd`` must be an open file of exactly the RAM's size."""
    if type(fd) is not int or not 0 <= fd < 1 << 31:
        raise HartvmError(f"bad memory_fd {quoted(fd)}: an open file descriptor")
    try:
        info = os.fstat(fd)
    except OSError as error:
        raise HartvmError(f"bad memory_fd {fd}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size != size:
        raise HartvmError(f"bad memory_fd {fd}: not a regular file of {size} bytes")


class Machine:
    def __init__(self, memory_size: int = DEFAULT_MEMORY, harts: int = 1, io: HostIO | None = None,
                 rtc_epoch_ns: int = DEFAULT_RTC_EPOCH_NS, rng_seed: bytes = DEFAULT_RNG_SEED,
                 memory_fd: int | None = None):
        """``io`` connects the machine to the host (stdout alone by default).
        ``rng_seed`` goes to the kernel in the device tree (fixed by default, for
        reproducible runs; give fresh random bytes for guests that need secrets).
        ``memory_fd``: a file with the RAM's initial content (a snapshot's),
        mapped copy-on-write."""
        check_harts(harts)
        memory_size = limits.memory_size(memory_size)
        if io is not None and not isinstance(io, HostIO):
            raise HartvmError(f"io must be a HostIO, not a {type(io).__name__}")
        if type(rtc_epoch_ns) is not int or not 0 <= rtc_epoch_ns < 1 << 63:
            raise HartvmError(f"bad rtc_epoch_ns {quoted(rtc_epoch_ns)}: nanoseconds since 1970")
        if not isinstance(rng_seed, (bytes, bytearray)):
            raise HartvmError(f"rng_seed must be bytes, not a {type(rng_seed).__name__}")
        if memory_fd is not None:
            _check_memory_file(memory_fd, memory_size)
        self.io = io or HostIO()
        self._exit_status: int | None = None
        self._reset_requested = False
        self.rng_seed = bytes(rng_seed)
        states = []
        self.board = VirtBoard(memory_size, states, self.io, self._guest_exit,
                               self._guest_reset, self._elapsed_ns, rtc_epoch_ns, memory_fd)
        # The first VM generation ID follows from the seed: runs stay reproducible.
        self.board.devices["vmgenid"].generation_id = \
            hashlib.sha256(b"vmgenid" + self.rng_seed).digest()[:16]
        self.ram = self.board.ram
        rom = MEMORY_MAP["rom"]
        self.harts = [Hart(i, self.ram, rom.base, self.board.devices["rom"].halfwords)
                      for i in range(harts)]
        states.extend(hart.state for hart in self.harts)
        self.sleeping = [False] * harts
        # The round under way, with several harts: its end (hart 0's cycle) and
        # the next hart to run in it; None between rounds. A run cut short
        # (max_instructions) leaves it here and the next run goes on with it,
        # so how a run is cut changes nothing in how the harts interleave.
        self._round_end: int | None = None
        self._round_next = 0
        self.htif: HTIF | None = None
        self._blobs = []                  # what reset copies into RAM again
        self._until: Callable[[], bool] | None = None
        self.breakpoint_hart: int | None = None    # the hart that stopped at an ebreak
        self.hooks = Hooks()
        self.hook_stop = False            # a hook asked run() to stop
        # Harts stopped by a hook before a watched access: the kind of access.
        self._past_watch: dict[int, int] = {}

    # --- hooks (hooks.py) --------------------------------------------------------
    def hook_code(self, address: int, fn: Callable) -> Hook:
        """``fn(hart)`` before the instruction at ``address`` executes."""
        return self.hooks.code(address, fn)

    def hook_memory(self, start: int, end: int, fn: Callable, access: str = "w") -> Hook:
        """``fn(hart, access)`` before a load ("r"), store ("w") or either ("rw") touches
        [start, end)."""
        return self.hooks.memory(start, end, fn, access)

    def hook_trap(self, fn: Callable) -> Hook:
        """``fn(hart, trap)`` after a hart has entered a trap handler."""
        return self.hooks.trap(fn)

    # --- loading --------------------------------------------------------------
    def load_kernel(self, path: str) -> int:
        """Bare metal: load an ELF and start it as QEMU's virt board does with
        ``-bios none`` (M-mode, the device tree's address in a1)."""
        image = load_file(path, self.ram, self.ram.base, "kernel", elf_only=True)
        fdt_addr = bare_metal_fdt(self.ram, image, path)
        dtb = self.board.device_tree(len(self.harts), rng_seed=self.rng_seed)
        if not self.ram.contains(fdt_addr, len(dtb)):
            raise HartvmError(f"{path}: the device tree does not fit in RAM (use more --memory)")
        if image.tohost is not None and self.ram.contains(image.tohost, 8):
            self.htif = HTIF(self.ram, image.tohost, image.fromhost, self.io.console_write,
                             self._guest_exit)
        self._blobs = list(image.blobs) + [Blob(fdt_addr, dtb)]
        # QEMU's reset vector jumps to the start of RAM (start_addr), whatever the
        # ELF's entry, with fw_dynamic_info's next_addr the ELF's lowest load
        # address: riscv_load_kernel returns kernel_load_base (hw/riscv/boot.c,
        # virt_machine_done in hw/riscv/virt.c; seen with QEMU 7.2).
        lowest = min(segment.paddr for segment in image.segments)
        self.board.set_boot(self.ram.base, fdt_addr, next_addr=lowest)
        self.board.load_rom(image.segments, path)
        self.reset()
        return image.entry

    def boot(self, kernel: str, firmware: str, initrd: str | None = None, bootargs: str = ""):
        """Firmware, kernel, initrd and device tree, placed as QEMU's virt machine
        places them (board/boot.py)."""
        linux = LinuxBoot(self.ram, kernel, firmware, initrd)
        dtb = self.board.device_tree(len(self.harts), bootargs, linux.initrd,
                                     rng_seed=self.rng_seed)
        fdt_addr = linux.place_fdt(dtb)
        self._blobs = linux.blobs
        self.board.set_boot(linux.firmware.entry, fdt_addr, next_addr=linux.kernel.entry)
        self.board.load_rom(linux.firmware.segments, firmware)
        self.board.load_rom(linux.kernel.segments, kernel)
        self.reset()

    def reset(self) -> None:
        """Reset every hart to the boot ROM and copy the boot images into RAM again."""
        for blob in self._blobs:
            self.ram.write(blob.paddr, blob.data)
        self._reset_requested = False
        self._round_end = None
        self.board.reset()
        for index, hart in enumerate(self.harts):
            hart.reset(MEMORY_MAP["rom"].base)
            self.sleeping[index] = False
            if self.htif is not None:
                hart.state[L.WATCH_PADDR] = self.htif.tohost & ~7

    # --- guest callbacks ------------------------------------------------------
    def _guest_exit(self, status: int) -> None:
        self._exit_status = status

    def _guest_reset(self) -> None:
        self._reset_requested = True

    def _elapsed_ns(self) -> int:
        """Guest time since reset, from hart 0's clock (100 ns per mtime tick)."""
        return int(mtime(self.harts[0].state)) * (10**9 // L.TIMEBASE_HZ)

    # --- snapshots ----------------------------------------------------------------
    SAVE_VERSION = 1

    def components(self) -> list[tuple[str, object]]:
        """What a snapshot holds, by section name: the harts, then every board
        device by its name in the board table (the CLINT's section is empty:
        mtimecmp and msip live in the harts' state)."""
        return [(f"hart{index}", hart) for index, hart in enumerate(self.harts)] + \
            self.board.components()

    def save(self) -> dict:
        if self.htif is not None:
            raise HartvmError("a bare-metal program with HTIF cannot be snapshotted")
        return {"sleeping": list(self.sleeping), "virtio": list(self.board.virtio),
                "round": [self._round_end, self._round_next]}

    def restore(self, state: dict) -> None:
        """Only the machine's own part; ``components()`` restore themselves."""
        sleeping = state.get("sleeping")
        if not isinstance(sleeping, list) or len(sleeping) != len(self.harts):
            raise ValueError("bad list of sleeping harts")
        if state.get("virtio") != list(self.board.virtio):
            raise ValueError(f"virtio devices {quoted(state.get('virtio'))} in their slots, this "
                             f"machine has {list(self.board.virtio)}")
        round_ = state.get("round", [None, 0])    # (snapshots before it have none)
        if not isinstance(round_, list) or len(round_) != 2 or \
                not (round_[0] is None or type(round_[0]) is int and 0 <= round_[0] < 1 << 62) \
                or type(round_[1]) is not int or not 0 <= round_[1] <= len(self.harts):
            raise ValueError("bad round under way")
        self.sleeping = [bool(value) for value in sleeping]
        self._round_end, self._round_next = round_
        self._blobs = []               # nothing to reboot from (see run)

    # --- running --------------------------------------------------------------
    @property
    def instructions(self) -> int:
        """Instructions executed by all harts (trapping ones included)."""
        return sum(hart.steps for hart in self.harts)

    def run(self, until: Callable[[], bool] | None = None,
            max_instructions: int | None = None) -> RunResult:
        """Run until the guest ends, ``until()`` is true (checked between rounds
        and on wake-ups), every hart waits forever, or ``max_instructions``."""
        if max_instructions is not None and (type(max_instructions) is not int or
                                             max_instructions < 0):
            # (an int only: a float would compile the hart loop again for floats)
            raise HartvmError(f"bad max_instructions {quoted(max_instructions)}: 0 or more")
        if until is not None and not callable(until):
            raise HartvmError(f"until must be a callable, not a {type(until).__name__}")
        start = self.instructions
        self._until = until
        self.hooks.arm(self.harts)
        try:
            while True:
                executed = self.instructions - start
                if max_instructions is not None and executed >= max_instructions:
                    return RunResult(Stop.INSTRUCTION_LIMIT, 0, executed)
                limit = None if max_instructions is None else max_instructions - executed
                if not self._round(limit):
                    return RunResult(Stop.HALTED, 0, self.instructions - start)
                if self._reset_requested:
                    if not self._blobs:
                        # A restored machine has no boot images to reboot from.
                        return RunResult(Stop.EXITED, 0, self.instructions - start)
                    self.reset()
                if self._exit_status is not None:
                    status, self._exit_status = self._exit_status, None
                    return RunResult(Stop.EXITED, status, self.instructions - start)
                if self.breakpoint_hart is not None:
                    return RunResult(Stop.BREAKPOINT, 0, self.instructions - start)
                if self.hook_stop:
                    self.hook_stop = False
                    return RunResult(Stop.HOOK, 0, self.instructions - start)
                if self._stop_wanted():
                    return RunResult(Stop.STOPPED, 0, self.instructions - start)
                self.io.flush()
        finally:
            self._until = None
            self.io.flush()

    def _stop_wanted(self) -> bool:
        return self._until is not None and self._until()

    def _round(self, limit: int | None, stepping: tuple[int, int] | None = None) -> bool:
        """Run every hart up to the end of a round (or on with the round under way);
        False if none can ever run again. ``stepping`` (hart, steps): stop once
        that hart's step count has reached ``steps`` (``step``).

        While a record is replayed (journal.py), the round ends at the moment
        (position and cycle) of its next input at the latest, so that the next
        round's poll delivers it there, as it came in the recorded run."""
        if self._round_end is None:
            if not self._start_round(limit):
                return False
            if self._round_end is None:
                return True           # host input woke a hart: a round starts next time
        round_end = self._round_end
        start = self.instructions
        for index in range(self._round_next, len(self.harts)):
            hart = self.harts[index]
            left = None if limit is None else limit - (self.instructions - start)
            if left is not None and left <= 0:
                return True
            steps = hart.steps
            stepped = stepping is not None and index == stepping[0]
            if stepped:
                left = stepping[1] - steps if left is None else min(left, stepping[1] - steps)
            self._run_hart(index, hart, round_end, left)
            if int(hart.state[L.CYCLE]) >= round_end:
                self._round_next = index + 1
            if self._must_stop() or self._round_next == index or \
                    stepped and hart.steps >= stepping[1]:
                return True
        self._round_end = None
        return True

    def _start_round(self, limit: int | None) -> bool:
        """Poll the host and set the end of the next round; False if no hart can
        ever run again. With one hart a round may be cut at ``limit``; with
        several it is always QUANTUM cycles long (or up to the next wake-up
        when every hart sleeps), so that rounds fall where they would have."""
        self.io.poll()
        due = self.io.next_event()
        if due is not None and due[0] > self.instructions:
            ahead = due[0] - self.instructions
            limit = ahead if limit is None else min(limit, ahead)
        if len(self.harts) == 1:
            length = SLICE if limit is None else min(SLICE, limit)
        else:
            length = QUANTUM
        round_end = int(self.harts[0].state[L.CYCLE]) + length
        if all(self._asleep(i) for i in range(len(self.harts))):
            deadlines = self._wake_ups()
            if not deadlines:
                return self._wait_for_input()
            wake = min(deadlines)
            if self.io.realtime:
                round_end = self._sleep_until(wake)   # only as far as host time went
            else:
                round_end = max(round_end, wake)
        if due is not None and due[1] is not None:
            round_end = min(round_end, due[1])      # a sleeping hart's time stops there too
        self._round_end, self._round_next = round_end, 0
        return True

    def _wake_ups(self) -> list[int]:
        """The cycles at which a timer (a hart's, or a device's) will wake a hart."""
        deadlines = [d for d in (self._deadline(hart) for hart in self.harts) if d is not None]
        event = self._event_cycle(self.harts[0])
        return deadlines if event is None else deadlines + [event]

    def step(self, index: int) -> int | None:
        """Run hart ``index`` alone for one instruction (the others wait: the
        lockstep tool's schedule); a hart asleep in WFI sleeps on for at most a
        round instead. The guest's exit status if it ended, else None."""
        hart = self.harts[index]
        self.hooks.arm(self.harts)
        self._run_hart(index, hart, int(hart.state[L.CYCLE]) + SLICE, 1)
        return self._stepped()

    def step_in_turn(self, index: int, count: int = 1) -> int | None:
        """Run the harts as they are scheduled until hart ``index`` has executed
        ``count`` instructions (a debugger's stepi: what happens is what a run
        would do, which reverse execution relies on); a hart asleep in WFI
        sleeps on for at most a round more. The guest's exit status if it
        ended, else None."""
        hart = self.harts[index]
        self.hooks.arm(self.harts)
        target, idle = hart.steps + count, 0
        while hart.steps < target and idle < 2:   # a hart asleep: this round and one more
            if self._round_end is None and not self._wake_ups() and \
                    all(self._asleep(i) for i in range(len(self.harts))):
                break                 # nothing can wake a hart but the host
            steps = hart.steps
            self._round(None, (index, target))
            if self._must_stop():
                break
            idle = idle + 1 if hart.steps == steps else 0
        return self._stepped()

    def _must_stop(self) -> bool:
        """Has the guest ended or reset, or a debugger's breakpoint or a hook stopped it?"""
        return self._exit_status is not None or self._reset_requested or \
            self.breakpoint_hart is not None or self.hook_stop

    def _stepped(self) -> int | None:
        self.hook_stop = False
        status, self._exit_status = self._exit_status, None
        return status

    def warm_up(self) -> None:
        """Load the compiled code now rather than at the first instruction (numba
        loads a function from its cache on its first call): forks made later then
        share it instead of each loading it again. Changes no guest state."""
        for index, hart in enumerate(self.harts):
            hart.run(0)
            self._deadline(hart)
            self._asleep(index)

    def _asleep(self, index: int) -> bool:
        """Is hart ``index`` in WFI with nothing pending for it?"""
        if self.sleeping[index]:
            state = self.harts[index].state
            if effective_mip(state) & state[L.CSR + L.MIE]:
                self.sleeping[index] = False
        return self.sleeping[index]

    def _deadline(self, hart: Hart) -> int | None:
        """The cycle at which one of the hart's enabled timer interrupts becomes
        pending: the ACLINT's (mtimecmp, MTIE) or Sstc's (stimecmp, STIE, while
        menvcfg.STCE is set); None if neither is enabled and armed."""
        state = hart.state
        enabled = int(state[L.CSR + L.MIE])
        deadlines = []
        if enabled & L.MIP_MTIP:
            deadlines.append(_timer_cycle(state, int(state[L.MTIMECMP]) & (2**64 - 1)))
        if enabled & L.MIP_STIP and state[L.CSR + L.MENVCFG] & L.MENVCFG_STCE:
            deadlines.append(_timer_cycle(state, int(state[L.CSR + L.STIMECMP]) & (2**64 - 1)))
        return min((d for d in deadlines if d is not None), default=None)

    def _event_cycle(self, hart: Hart) -> int | None:
        """The cycle of ``hart`` at which a device's timer is due (the RTC alarm),
        from the guest time it is due at (hart 0's mtime, see _elapsed_ns)."""
        due_ns = self.board.next_event_ns()
        if due_ns is None:
            return None
        state = hart.state
        tick = -(-due_ns // (10**9 // L.TIMEBASE_HZ))
        now = int(mtime(state))
        cycle = int(state[L.CYCLE])
        if tick <= now:
            return cycle
        if tick - now > MAX_SLEEP_TICKS:
            return None               # as a timer that far away: never
        return cycle + (tick - now) * L.CYCLES_PER_TICK - cycle % L.CYCLES_PER_TICK

    def _run_hart(self, index: int, hart: Hart, round_end: int, steps_left: int | None) -> None:
        state = hart.state
        stop_at = None if steps_left is None else hart.steps + steps_left
        while int(state[L.CYCLE]) < round_end and (stop_at is None or hart.steps < stop_at):
            # A device timer (the RTC alarm) fires at its cycle: the hart runs
            # up to it, then the device acts before the hart goes on.
            end = round_end
            event = self._event_cycle(hart)
            if event is not None:
                if event <= int(state[L.CYCLE]):
                    self.board.expire()
                elif event < end:
                    end = event
            if self._asleep(index):
                deadline = self._deadline(hart)
                if deadline is None or deadline > end:
                    state[L.CYCLE] = end         # time passes while it sleeps
                    if end == round_end:
                        return
                    continue                     # to the device's event
                state[L.CYCLE] = max(deadline, int(state[L.CYCLE]))
                self.sleeping[index] = False
            trace = self.io.trace
            if trace is not None:
                line, before, steps = hart.trace_line(), state[:64].copy(), hart.steps
            if index in self._past_watch:
                reason = self._past_watched_access(index, hart, self._past_watch.pop(index))
            elif trace is not None:
                reason = hart.run(1)
            else:
                budget = end - int(state[L.CYCLE])
                if stop_at is not None:
                    budget = min(budget, stop_at - hart.steps)
                reason = hart.run(budget)
            self._serve(index, hart, reason)
            if trace is not None and hart.steps != steps:   # (not a hook's stop before it)
                trace.write(self._trace_line(line, before, state))
            if self._must_stop():
                return

    def _serve(self, index: int, hart: Hart, reason: int) -> None:
        """Do what the hart left its loop for (``_must_stop`` then says whether the
        front end must see it: a debugger's breakpoint, a hook's stop)."""
        state = hart.state
        if reason == L.EXIT_MMIO:
            self._mmio(hart)
        elif reason == L.EXIT_HTIF and self.htif is not None:
            self.htif.handle()
        elif reason == L.EXIT_WFI:
            self.sleeping[index] = True
        elif reason == L.EXIT_EBREAK:
            self.breakpoint_hart = index          # (only while a debugger is attached)
        elif reason == L.EXIT_WATCH:
            kind = int(state[L.EXIT_FLAGS])
            self.hooks.watch_hit(self, index)
            if self.hook_stop:
                self._past_watch[index] = kind    # made when the hart runs again
            else:
                self._serve(index, hart, self._past_watched_access(index, hart, kind))
            return
        if state[L.EXIT_REASON] == L.EXIT_TRAP:   # (also set by a trap the MMIO raised)
            self.hooks.trap_taken(self, index)

    @staticmethod
    def _past_watched_access(index: int, hart: Hart, kind: int) -> int:
        """Run the hart for one instruction with the watches of one ``kind`` of
        access off, so that the access its hooks have seen is made (and the
        others that instruction makes are still watched). Its exit reason."""
        kinds = hart.state[L.WATCHES + 2:L.WATCHES + 3 * L.WATCH_ENTRIES:3]
        saved = kinds.copy()
        kinds &= ~(1 << kind)
        try:
            return hart.run(1)
        finally:
            kinds[:] = saved
            tlb_flush(hart.state)              # (that step may have cached a watched page)

    @staticmethod
    def _trace_line(line: str, before, state) -> str:
        """A trace line, with the registers the instruction changed."""
        for index in range(1, 64):
            if state[index] != before[index]:
                name = f"x{index}" if index < 32 else f"f{index - 32}"
                line += f"  {name}={int(state[index]) & (2**64 - 1):#x}"
        return line + "\n"

    def _mmio(self, hart: Hart) -> None:
        state = hart.state
        paddr = int(state[L.EXIT_PADDR]) & (2**64 - 1)
        size = int(state[L.EXIT_SIZE])
        if int(state[L.EXIT_FLAGS]) & L.MMIO_WRITE:
            if self.board.bus.write(paddr, size, int(state[L.EXIT_VALUE])):
                hart.retire_mmio()
            else:
                hart.fault_mmio()
        else:
            value = self.board.bus.read(paddr, size)
            if value is None:
                hart.fault_mmio()
            else:
                hart.complete_load(value)

    # --- waiting for the host -------------------------------------------------------
    def _wait_for_input(self) -> bool:
        """Every hart sleeps and no timer is armed: only the host (input, or the
        front end through a wake-up and ``until``) can end the wait. While a record
        is replayed, its next input ends it: the harts sleep until its cycle."""
        if self.io.replaying:
            return self._wait_for_replayed_input()
        while self.io.waits_for_host:
            self.io.poll(timeout=IDLE_POLL)
            if not all(self._asleep(i) for i in range(len(self.harts))):
                return True
            if self._stop_wanted():
                return True       # run() sees it and stops
        return False

    def _wait_for_replayed_input(self) -> bool:
        due = self.io.next_event()
        if due is None:
            return False                      # the record holds no more input
        if due[0] != self.instructions or due[1] is None:     # (None: after a reboot)
            raise HartvmError(f"the guest diverged from the record: it waits for input at "
                              f"instruction {self.instructions}, the record's next input "
                              f"came at instruction {due[0]}")
        for hart in self.harts:
            hart.state[L.CYCLE] = max(int(hart.state[L.CYCLE]), due[1])
        return True

    def _sleep_until(self, wake_cycle: int) -> int:
        """Realtime idle: let skipped guest time pass on the host clock too.

        Sleeps until ``wake_cycle`` (at most a second at a time) or until host
        input wakes a hart; returns the cycle the guest's time has reached.
        """
        now = int(self.harts[0].state[L.CYCLE])
        cycles_per_second = L.CYCLES_PER_TICK * L.TIMEBASE_HZ
        clock = self.io.monotonic
        started = clock()
        end = started + min((wake_cycle - now) / cycles_per_second, 1.0)
        while clock() < end:
            if self.io.poll(timeout=max(end - clock(), 0)) and (
                    not all(self._asleep(i) for i in range(len(self.harts))) or
                    self._stop_wanted()):
                break
        passed = int((clock() - started) * cycles_per_second)
        return min(wake_cycle, now + max(passed, 1))

