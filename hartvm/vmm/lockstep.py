"""Lockstep: one bare-metal program on QEMU and on hartvm, instruction by
instruction, up to the first divergence of pc, registers or device reads
(issue 13, "what QEMU's virt machine runs, hartvm runs").

    python -m hartvm.vmm.lockstep PROGRAM.elf [--smp N] [--drive IMAGE] ...

How
---
QEMU (``qemu-system-riscv64 -M virt -cpu QEMU_CPU -bios none -kernel ELF``,
as the tests run it) starts held (``-S``) with its GDB stub on a Unix socket;
a small remote-protocol client below steps it. hartvm runs in this process:
a Machine with the same harts, RAM and drives, driven through its Debugger
(GDB register numbers on both sides).

- **An explicit schedule, the same on both.** QEMU 7.2's stub resumes only
  the threads a ``vCont`` names (gdbstub.c, gdb_continue_partial), so
  ``vCont;s:p1.N`` steps hart N-1 while every other hart stays stopped. The
  harts take turns, ``quantum`` instructions each, on both machines.
  Stepping with interrupts and timers on needs ``Qqemu.sstep=1`` (QEMU's
  default, NOIRQ|NOTIMER, would never deliver an interrupt to a stepped hart).
- **After each step** pc and x1-x31 of the stepped hart are compared (QEMU's
  ``g``). A load from a device is found by decoding the instruction before the
  step (its address outside RAM): a different loaded value is reported as a
  device read, with the device address. On a trap entry, mcause, mepc and
  mtval are compared too. FP registers and memory are not compared (a
  divergence there shows in the integer registers once the program uses it).
- **Time is QEMU's.** QEMU's clock is one for all harts and runs (with the
  host's) while a hart is stepped; hartvm gives each hart a clock of its own
  (10 ns per instruction of that hart). These are models, not bugs, so: the
  result of an instruction that reads a counter (``csrr time/cycle/instret``,
  the M-mode and hpm counters) or a clock device (CLINT mtime, the Goldfish
  RTC) is copied from QEMU into hartvm's destination register, and the clock
  of a hart whose timer interrupt is enabled is set to QEMU's mtime before
  each of its steps, so that timer interrupts come at the same instruction.
  (``-icount`` would make QEMU's time reproducible, but QEMU 7.2 under its
  stub with ``-icount shift=3,sleep=off`` never ended the step after a hart
  wrote -1 to its mtimecmp: tests/programs/smp_clint.c.) So QEMU's run, and
  this one, are not reproducible instruction for instruction where the
  program's path depends on time; the comparison holds on every run.
- **Spurious stops.** QEMU 7.2 now and then answers a step with a stop of the
  hart before it executed anything (pc unchanged, a few times in a run of
  tests/programs/smp_clint.c); such a step is done again (up to
  SPURIOUS_STOPS times), unless the instruction is a jump to itself.
- **Interrupts that come at a different instruction.** QEMU's step that
  takes an interrupt stops at the handler's first instruction (cpu-exec.c,
  cpu_handle_interrupt: EXCP_DEBUG after the interrupt when single-stepping);
  hartvm's interrupt entry is done here the same way (take_trap, as its run
  loop does). When hartvm has an interrupt to take but QEMU executes the
  instruction instead (e.g. a virtio request, which hartvm completes at the
  notify and QEMU in its main loop a little later), hartvm executes it with
  that interrupt masked (mie), for at most ``max_skew`` instructions, until
  QEMU takes it. When QEMU takes an interrupt that hartvm would take later,
  hartvm takes it then. Each skew is reported as a note, not a divergence.
- **WFI.** QEMU's step of a ``wfi`` with nothing to wake it does not end
  until an interrupt comes, and stepping a hart alone means no other hart can
  send it one. So when hartvm's hart goes to sleep, QEMU's step of the
  ``wfi`` is stopped (Ctrl-C) once the hart has halted (its pc past the
  ``wfi``): both sleep, and the hart leaves the schedule until hartvm has an
  interrupt for it; its next step on QEMU wakes it and takes the interrupt.
  When every hart sleeps, QEMU steps the one with the nearest timer (the step
  ends when QEMU's clock gets there) and hartvm follows at QEMU's time. QEMU's
  step of a ``wfi`` that wakes at once but takes no interrupt (mstatus.MIE
  clear) also executes the next instruction: hartvm then steps once more.

What a run gives: the number of steps, the first divergence (what differs,
both sides' values, the last instructions of the hart, disassembled), notes
(interrupt skews), both consoles' output and both exit statuses. Not
compared: FP registers, memory, CSRs outside trap entries, the order of
device events that neither hart observes. Not comparable: events that follow
the host's clock in QEMU (the Goldfish RTC's alarm: stepping is thousands of
times slower than QEMU runs, so an alarm comes after far fewer instructions),
and HTIF, which hartvm serves and QEMU's virt board does not.
"""

import argparse
import collections
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from ..cpu import layout as L
from ..cpu.compressed import EXPANSION_TABLE
from ..cpu.csr import mtime
from ..cpu.disasm import XNAMES, disassemble
from ..cpu.trap import effective_mip, pending_interrupt, take_trap
from ..errors import HartvmError
from ..hostio import HostIO
from ..machine import Machine
from .debugger import PC_REGNUM, Debugger, Event
from .vm import parse_drive

QEMU_CPU = "rv64,v=false,zba=false,zbb=false,zbc=false,zbs=false,svpbmt=false"
MASK64 = (1 << 64) - 1
STEP_TIMEOUT = 10.0            # seconds QEMU may take for one step (a wfi wakes in it)
RECENT = 12                    # instructions of history in a report
SPURIOUS_STOPS = 5             # steps QEMU may end without executing, in a row
HALT_DELAY = 0.02              # seconds a hart is given to halt in its wfi

# Counter CSRs (Zicntr, the M-mode counters and the hpm ones): their values
# follow each machine's model of time, not the program.
COUNTER_CSRS = {0xC00, 0xC01, 0xC02, 0xB00, 0xB02} | set(range(0xC03, 0xC20)) | \
    set(range(0xB03, 0xB20))
CSR_MIE = 0x304
# Device registers that read a clock: the CLINT's mtime and the Goldfish RTC's
# TIME_LOW/TIME_HIGH (board/virt.py).
CLOCK_REGISTERS = [(0x0200_BFF8, 8), (0x0010_1000, 8)]
WFI = 0x10500073


class LockstepError(HartvmError):
    """The comparison itself cannot go on (QEMU missing, not answering, ...)."""


# --- QEMU through its GDB stub ------------------------------------------------------
class GdbRemote:
    """A client of the GDB remote serial protocol: one packet out, its answer in."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""
        self.ack = b""                  # the acknowledgement owed for the last answer

    def request(self, data: str, timeout: float = STEP_TIMEOUT) -> str:
        self.send(data)
        return self.receive(timeout)

    def send(self, data: str) -> None:
        # The ack goes out with the next packet: one write per request instead of
        # two (QEMU 7.2 has no QStartNoAckMode). Only answers are acked, and QEMU
        # answers while stopped: a byte sent while it runs would stop it.
        payload = data.encode()
        self.sock.sendall(self.ack + b"$%s#%02x" % (payload, sum(payload) & 0xFF))
        self.ack = b""

    def receive(self, timeout: float) -> str:
        """The next packet's payload; acks and noise before it are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            start = self.buffer.find(b"$")
            end = self.buffer.find(b"#", start) if start >= 0 else -1
            if end >= 0 and len(self.buffer) >= end + 3:
                payload, self.buffer = self.buffer[start + 1:end], self.buffer[end + 3:]
                self.ack = b"+"
                return _unescape(payload).decode("latin-1")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk


def _unescape(payload: bytes) -> bytes:
    """Binary data in a reply: '}' escapes the next byte (xor 0x20)."""
    if b"}" not in payload:
        return payload
    out, escaped = bytearray(), False
    for byte in payload:
        if escaped:
            out.append(byte ^ 0x20)
            escaped = False
        elif byte == 0x7D:
            escaped = True
        else:
            out.append(byte)
    return bytes(out)


class Qemu:
    """qemu-system-riscv64 held under its GDB stub, one hart stepped at a time."""

    def __init__(self, elf: str, harts: int, memory: int, drives=(), qemu: str | None = None,
                 cpu: str = QEMU_CPU):
        path = qemu or shutil.which("qemu-system-riscv64")
        if path is None:
            raise LockstepError("qemu-system-riscv64 not found: install Debian's qemu-system-misc")
        self.directory = tempfile.TemporaryDirectory(prefix="hartvm-lockstep-")
        self.output_path = os.path.join(self.directory.name, "serial")
        gdb_socket = os.path.join(self.directory.name, "gdb")
        command = [path, "-M", "virt", "-cpu", cpu, "-smp", str(harts), "-m", f"{memory >> 20}M",
                   "-bios", "none", "-kernel", elf, "-display", "none", "-monitor", "none",
                   "-serial", f"file:{self.output_path}",
                   "-chardev", f"socket,id=gdb,path={gdb_socket},server=on,wait=off",
                   "-gdb", "chardev:gdb", "-S"]
        if drives:
            # QEMU 7.2's virtio-mmio is legacy (version 1) unless told; hartvm's is
            # version 2 (hw/virtio/virtio-mmio.c, "force-legacy").
            command += ["-global", "virtio-mmio.force-legacy=false"]
        for index, drive in enumerate(drives):
            image, _, options = drive.partition(",")
            readonly = ",readonly=on" if options else ""
            # hartvm fills the virtio-mmio slots from the first up; QEMU plugs a
            # -device into the last free bus first (the last slot), unless told.
            command += ["-drive", f"file={image},if=none,format=raw,id=d{index}{readonly}",
                        "-device", f"virtio-blk-device,drive=d{index},bus=virtio-mmio-bus.{index}"]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.remote = None
        self.exit_status: int | None = None
        self.selected = None
        try:
            self.remote = GdbRemote(self._connect(gdb_socket))
            self.remote.request("qSupported:multiprocess+")
            if self.remote.request("Qqemu.sstep=1") != "OK":
                raise LockstepError("QEMU refused to step with interrupts and timers enabled")
            self.regnums = self._register_numbers()
        except BaseException:
            self.close()
            raise

    def _connect(self, path: str) -> socket.socket:
        for _ in range(200):
            if self.process.poll() is not None:
                raise LockstepError(f"QEMU ended at start: {self.process.stderr.read().decode()}")
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(path)
                return sock
            except OSError:
                sock.close()
                time.sleep(0.05)
        raise LockstepError("QEMU's GDB stub did not answer")

    def _register_numbers(self) -> dict[str, int]:
        """Register name -> GDB number, from QEMU's target description (the CSRs'
        numbers are 65 + the CSR number in QEMU 7.2, but read, not assumed)."""
        numbers: dict[str, int] = {}
        documents, seen = ["target.xml"], set()
        while documents:
            name = documents.pop(0)
            if name in seen:
                continue
            seen.add(name)
            text, offset = "", 0
            while True:
                reply = self.remote.request(f"qXfer:features:read:{name}:{offset:x},ffb")
                text += reply[1:]
                offset += len(reply) - 1
                if reply[:1] != "m":
                    break
            # (QEMU's documents use xi: without declaring it: not for an XML parser)
            documents += re.findall(r'<xi:include href="([^"]+)"', text)
            following = None
            for attributes in re.findall(r"<reg ([^>]*)>", text):
                reg = dict(re.findall(r'(\w+)="([^"]*)"', attributes))
                number = int(reg["regnum"]) if "regnum" in reg else following
                if number is not None:
                    numbers[reg["name"]] = number
                    following = number + 1
        return numbers

    def _select(self, hart: int) -> None:
        if self.selected != hart:
            self.remote.request(f"Hgp1.{hart + 1:x}")
            self.selected = hart

    def step(self, hart: int) -> bool:
        """One instruction (or one interrupt entry) of ``hart``; False if QEMU ended."""
        if self.exit_status is not None:
            return False
        try:
            reply = self.remote.request(f"vCont;s:p1.{hart + 1:x}")
        except EOFError:
            reply = None
        except TimeoutError:
            raise LockstepError(f"QEMU's hart {hart} did not finish its step in {STEP_TIMEOUT} s "
                                f"(a wfi that nothing wakes while the other harts are held?)")
        if reply is None or reply[:1] in ("W", "X"):
            self.exit_status = self._exit(reply)
            return False
        # QEMU makes the thread that stopped the one registers are read from.
        self.selected = hart if f"thread:p01.{hart + 1:02x};" in reply else None
        return True

    def sleep(self, hart: int, pc: int) -> bool:
        """Execute the wfi at ``pc``, which halts the hart (its pc then past the
        wfi, target/riscv/translate: trans_wfi). QEMU's step of it would end only
        with an interrupt, which the held harts cannot send: so the step is
        stopped (Ctrl-C) once the hart halted. False if QEMU ended."""
        for _ in range(SPURIOUS_STOPS):
            self.remote.send(f"vCont;s:p1.{hart + 1:x}")
            time.sleep(HALT_DELAY)
            self.remote.sock.sendall(b"\x03")
            try:
                reply = self.remote.receive(STEP_TIMEOUT)
                # A step that ended on its own (an interrupt came) as the Ctrl-C
                # arrived may answer twice.
                with contextlib.suppress(TimeoutError):
                    self.remote.receive(HALT_DELAY)
            except EOFError:
                reply = None
            if reply is None or reply[:1] in ("W", "X"):
                self.exit_status = self._exit(reply)
                return False
            self.selected = None
            if self.registers(hart)[32] != pc:
                return True
        raise LockstepError(f"QEMU's hart {hart} did not execute its wfi at {pc:#x}")

    def _exit(self, reply) -> int:
        try:
            status = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        if reply and reply[0] == "W":
            return int(reply[1:3], 16)
        return status

    def registers(self, hart: int) -> list[int]:
        """x0..x31 and pc."""
        self._select(hart)
        data = bytes.fromhex(self.remote.request("g"))
        return [int.from_bytes(data[i * 8:i * 8 + 8], "little") for i in range(33)]

    def register(self, hart: int, name: str) -> int:
        self._select(hart)
        return int.from_bytes(bytes.fromhex(self.remote.request(f"p{self.regnums[name]:x}")),
                              "little")

    def read_memory(self, address: int, length: int) -> int:
        reply = self.remote.request(f"m{address:x},{length:x}")
        return int.from_bytes(bytes.fromhex(reply), "little")

    def output(self) -> bytes:
        try:
            with open(self.output_path, "rb") as file:
                return file.read()
        except FileNotFoundError:
            return b""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()
        if self.remote is not None:
            self.remote.sock.close()
        self.directory.cleanup()


# --- the comparison ---------------------------------------------------------------
@dataclass
class Divergence:
    kind: str              # "pc", "register", "device read", "trap", "exit"
    step: int
    hart: int
    lines: list[str]       # what differs, then the hart's last instructions

    def __str__(self):
        return "\n".join([f"divergence ({self.kind}) at step {self.step}, hart {self.hart}:"] +
                         ["  " + line for line in self.lines])


@dataclass
class Result:
    steps: int = 0
    divergence: Divergence | None = None
    notes: list[str] = field(default_factory=list)
    ended: bool = False                 # both machines ended (or one diverged by ending)
    qemu_status: int | None = None
    hartvm_status: int | None = None
    qemu_output: bytes = b""
    hartvm_output: bytes = b""
    synced: int = 0                     # counter and clock reads copied from QEMU
    spurious_stops: int = 0             # QEMU steps that executed nothing, done again


@dataclass
class Instruction:
    """What the hart is about to execute, decoded as far as the comparison needs."""
    pc: int
    word: int
    length: int
    insn: int                           # the 32-bit form (compressed ones expanded)
    device_load: int | None = None      # the device address a load reads
    reads_counter: bool = False
    mie_access: bool = False

    def text(self) -> str:
        if self.length == 0:
            return "(fetch fault)"
        return disassemble(self.word, self.length)


def _decode(hart, state, ram) -> Instruction:
    word, length = hart.peek_instruction()
    pc = hart.pc
    if length == 0:
        return Instruction(pc, word, 0, 0)
    insn = int(EXPANSION_TABLE[word & 0xFFFF]) & 0xFFFFFFFF if length == 2 else word
    found = Instruction(pc, word, length, insn)
    opcode, funct3, rd = insn & 0x7F, (insn >> 12) & 7, (insn >> 7) & 31
    if opcode in (0x03, 0x07):                       # integer and FP loads
        imm = (insn >> 20) - (1 << 12) if insn >> 31 else insn >> 20
        address = (int(state[(insn >> 15) & 31]) + imm) & MASK64
        if not ram.contains(address, 1):
            found.device_load = address
    elif opcode == 0x73 and funct3 & 3:              # Zicsr
        csr = insn >> 20
        found.reads_counter = csr in COUNTER_CSRS and rd != 0
        found.mie_access = csr == CSR_MIE
    return found


class Lockstep:
    """Both machines, loaded and held at their first instruction."""

    def __init__(self, elf: str, harts: int = 1, memory: int = 128 << 20, drives=(),
                 quantum: int = 8, max_skew: int = 20_000, qemu: str | None = None):
        self.harts, self.quantum, self.max_skew = harts, quantum, max_skew
        self.hartvm_output = bytearray()
        self.machine = Machine(memory_size=memory, harts=harts,
                               io=HostIO(output=self.hartvm_output.extend))
        for index, spec in enumerate(drives):
            self.machine.board.attach_virtio(f"disk{index}", parse_drive(spec))
        self.machine.load_kernel(elf)
        self.debugger = Debugger(self.machine)
        self.qemu = Qemu(elf, harts, memory, drives, qemu)
        self.result = Result()
        self.recent = [collections.deque(maxlen=RECENT) for _ in range(harts)]
        self.waiting = [False] * harts      # asleep in a wfi on both, out of the schedule
        self.skew = [0] * harts             # instructions hartvm held an interrupt back for
        self.hart = 0                       # whose turn it is
        self.turn_left = quantum

    def close(self) -> None:
        self.qemu.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- the run ------------------------------------------------------------------
    def run(self, max_steps: int = 1_000_000) -> Result:
        """Step until a divergence, the end of both machines, or ``max_steps`` more steps."""
        result = self.result
        for _ in range(max_steps):
            if result.divergence or result.ended:
                break
            hart = self._next_hart()
            if hart is None:
                result.notes.append(f"step {result.steps}: every hart waits for an interrupt "
                                    f"that no timer brings: stopped")
                result.ended = True
                break
            self._step(hart)
        result.qemu_output = self.qemu.output()
        result.hartvm_output = bytes(self.hartvm_output)
        result.qemu_status = self.qemu.exit_status
        return result

    def _next_hart(self) -> int | None:
        """The schedule: harts in turn, ``quantum`` steps each, sleeping ones left out."""
        self._wake_sleepers()
        for _ in range(self.harts + 1):
            if self.turn_left > 0 and not self.waiting[self.hart]:
                self.turn_left -= 1
                return self.hart
            self.hart = (self.hart + 1) % self.harts
            self.turn_left = self.quantum
        # Every hart sleeps: the one with the nearest timer wakes first (on QEMU's clock).
        deadlines = [(int(self.machine.harts[i].state[L.MTIMECMP]) & MASK64, i)
                     for i in range(self.harts) if self._timer_enabled(i)]
        if not deadlines:
            return None
        return min(deadlines)[1]

    def _timer_enabled(self, hart: int) -> bool:
        state = self.machine.harts[hart].state
        return bool(state[L.CSR + L.MIE] & L.MIP_MTIP) and int(state[L.MTIMECMP]) != -1

    def _wake_sleepers(self) -> None:
        qemu_time = None
        for index in range(self.harts):
            if not self.waiting[index]:
                continue
            state = self.machine.harts[index].state
            if self._timer_enabled(index):
                if qemu_time is None:
                    qemu_time = self.qemu.read_memory(0x0200_BFF8, 8)
                self._set_time(state, qemu_time)
            _update_timers(state)
            if effective_mip(state) & state[L.CSR + L.MIE]:
                self.waiting[index] = False

    @staticmethod
    def _set_time(state, qemu_time: int) -> None:
        offset = qemu_time - int(state[L.CYCLE]) // L.CYCLES_PER_TICK
        state[L.TIME_OFFSET] = offset - (1 << 64) if offset >> 63 else offset

    def _step(self, index: int) -> None:
        result, machine = self.result, self.machine
        hart = machine.harts[index]
        state = hart.state
        # Asleep in a wfi on both machines (hartvm's sleeping, QEMU's halted): it
        # was woken (_wake_sleepers), or every hart sleeps and this one's timer
        # is the nearest (_next_hart).
        woken = machine.sleeping[index]
        if self._timer_enabled(index):
            self._set_time(state, self.qemu.read_memory(0x0200_BFF8, 8))
        _update_timers(state)
        instruction = _decode(hart, state, machine.ram)
        before = state.copy()
        pending = int(effective_mip(state) & state[L.CSR + L.MIE])
        hartvm_irq = int(pending_interrupt(state))
        sleeps = instruction.insn == WFI and not pending and not woken
        step = result.steps
        result.steps += 1
        self.recent[index].append((step, instruction))

        if not (self.qemu.sleep(index, instruction.pc) if sleeps else self.qemu.step(index)):
            self._qemu_ended(index, instruction)
            return
        qemu = self.qemu.registers(index)
        for _ in range(SPURIOUS_STOPS):
            if qemu[32] != instruction.pc or _jumps_to_itself(instruction) or woken:
                break
            # QEMU stopped the hart without executing anything (see the docstring).
            result.spurious_stops += 1
            if not self.qemu.step(index):
                self._qemu_ended(index, instruction)
                return
            qemu = self.qemu.registers(index)
        qemu_irq = self._qemu_interrupt(index, qemu[32], instruction, woken)
        if woken:
            # QEMU's clock went on while its hart slept: hartvm's follows.
            self._set_time(state, self.qemu.read_memory(0x0200_BFF8, 8))
            _update_timers(state)
            pending = int(effective_mip(state) & state[L.CSR + L.MIE])
            self.waiting[index] = False

        if qemu_irq is not None:
            # QEMU entered an interrupt handler: hartvm takes the same interrupt here.
            if not pending >> qemu_irq & 1:
                result.notes.append(f"step {step}, hart {index}: QEMU took interrupt {qemu_irq} "
                                    f"before hartvm had it pending; hartvm takes it too")
            if self.skew[index]:
                result.notes.append(f"step {step}, hart {index}: interrupt {qemu_irq} came "
                                    f"{self.skew[index]} instruction(s) later on QEMU")
                self.skew[index] = 0
            if sleeps and not self._hartvm_step(index):    # the wfi, on QEMU too
                return
            state[L.PC] = take_trap(state, qemu_irq, 0, int(state[L.PC]), True) & ~1
            machine.sleeping[index] = False
        elif woken:
            # QEMU woke from its wfi with interrupts masked and executed the next
            # instruction in the same step.
            if not self._hartvm_step(index):
                return
        elif hartvm_irq >= 0:
            # hartvm would enter a handler, QEMU executed the instruction: hold back.
            if self.skew[index] >= self.max_skew:
                self._diverge("interrupt", step, index, [
                    f"hartvm has had interrupt {hartvm_irq} pending for {self.max_skew} "
                    f"instructions; QEMU has not taken it"], before, qemu)
                return
            self.skew[index] += 1
            if not self._masked_step(index, pending, instruction, before):
                return
        else:
            if not self._hartvm_step(index):
                return
            if sleeps and machine.sleeping[index]:
                self.waiting[index] = True          # out of the schedule until woken
            elif instruction.insn == WFI and int(state[L.PC]) & MASK64 != qemu[32]:
                # QEMU's step of a wfi that does not sleep also ran the next instruction.
                self.recent[index].append((step, _decode(hart, state, machine.ram)))
                if not self._hartvm_step(index):
                    return
        self._compare(index, step, instruction, before, qemu, qemu_irq)

    def _step_alone(self, index: int) -> Event:
        """One instruction of hart ``index`` while the others wait, as QEMU's stub
        steps one thread (not Debugger.step, which runs the others as scheduled)."""
        status = self.machine.step(index)
        return Event("step", index) if status is None else Event("exited", status=status)

    def _hartvm_step(self, index: int) -> bool:
        event = self._step_alone(index)
        if event.kind == "exited":
            self.result.hartvm_status = event.status
            self._diverge("exit", self.result.steps - 1, index,
                          [f"hartvm ended (status {event.status}); QEMU runs on"], None, None)
            return False
        return True

    def _masked_step(self, index, pending, instruction, before) -> bool:
        """One step of hartvm with the interrupts in ``pending`` masked in mie; a write
        of the program's own to mie stands, with those bits as the program left them."""
        state = self.machine.harts[index].state
        saved = int(state[L.CSR + L.MIE])
        state[L.CSR + L.MIE] = saved & ~pending
        if not self._hartvm_step(index):
            return False
        if not instruction.mie_access:
            state[L.CSR + L.MIE] = saved
            return True
        funct3, rd, operand = (instruction.insn >> 12) & 7, (instruction.insn >> 7) & 31, \
            (instruction.insn >> 15) & 31
        if funct3 < 4:
            operand = int(before[operand]) & MASK64
        written = int(state[L.CSR + L.MIE])
        if funct3 & 3 == 2:                      # csrrs: bits only added
            written |= saved & pending
        elif funct3 & 3 == 3:                    # csrrc: bits the program cleared stay clear
            written |= saved & pending & ~operand
        state[L.CSR + L.MIE] = written
        if rd:
            state[rd] = saved - (1 << 64) if saved >> 63 else saved
        return True

    def _qemu_interrupt(self, index, pc, instruction, woken) -> int | None:
        """The interrupt QEMU's step entered a handler for, or None."""
        state = self.machine.harts[index].state
        for tvec, cause, epc in ((L.MTVEC, "mcause", "mepc"), (L.STVEC, "scause", "sepc")):
            base = int(state[L.CSR + tvec]) & MASK64
            entries = {base & ~3}
            if base & 3 == 1:
                entries |= {(base & ~3) + 4 * code for code in range(16)}
            if pc not in entries:
                continue
            value = self.qemu.register(index, cause)
            if not value >> 63:
                return None
            # mepc: the instruction not executed (after a wfi, the one after it).
            interrupted = {instruction.pc, instruction.pc + 4}
            if woken or self.qemu.register(index, epc) in interrupted:
                return value & 0xFFFF
        return None

    def _qemu_ended(self, index, instruction) -> None:
        """QEMU ended in this step: hartvm must end in the same instruction."""
        result = self.result
        result.qemu_status = self.qemu.exit_status
        event = self._step_alone(index)
        if event.kind == "exited":
            result.hartvm_status = event.status
            result.ended = True
            if event.status != self.qemu.exit_status:
                self._diverge("exit", result.steps - 1, index, [
                    f"exit status: QEMU {self.qemu.exit_status}, hartvm {event.status}"],
                    None, None)
            return
        self._diverge("exit", result.steps - 1, index, [
            f"QEMU ended (status {self.qemu.exit_status}) at {instruction.text()}; "
            f"hartvm runs on"], None, None)

    # --- comparing ----------------------------------------------------------------
    def _compare(self, index, step, instruction, before, qemu, qemu_irq) -> None:
        debugger, state = self.debugger, self.machine.harts[index].state
        executed = qemu_irq is None
        rd = (instruction.insn >> 7) & 31
        if executed and rd and (instruction.reads_counter or self._reads_clock(instruction)):
            # A reading of time: QEMU's stands (see the module's docstring).
            debugger.write_register(index, rd, qemu[rd])
            self.result.synced += 1
        ours = [debugger.read_register(index, n) for n in range(32)] + \
            [debugger.read_register(index, PC_REGNUM)]
        differing = [n for n in range(1, 33) if ours[n] != qemu[n]]
        if not differing:
            if qemu_irq is not None or int(state[L.PC]) & MASK64 in self._vectors(state):
                self._compare_trap(index, step, before, qemu)
            return
        if executed and instruction.device_load is not None and differing == [rd]:
            self._diverge("device read", step, index, [
                f"{instruction.text()} read device address {instruction.device_load:#x}: "
                f"QEMU {qemu[rd]:#x}, hartvm {ours[rd]:#x}"], before, qemu)
            return
        kind = "pc" if 32 in differing else "register"
        lines = [f"{_name(n)}: QEMU {qemu[n]:#x}, hartvm {ours[n]:#x}" for n in differing]
        self._diverge(kind, step, index, lines, before, qemu)

    def _compare_trap(self, index, step, before, qemu) -> None:
        differing = []
        for name, number in (("mcause", L.MCAUSE), ("mepc", L.MEPC), ("mtval", L.MTVAL)):
            ours = self.machine.harts[index].csr(number)
            theirs = self.qemu.register(index, name)
            if ours != theirs:
                differing.append(f"{name}: QEMU {theirs:#x}, hartvm {ours:#x}")
        if differing:
            self._diverge("trap", step, index, differing, before, qemu)

    @staticmethod
    def _vectors(state) -> set[int]:
        base = int(state[L.CSR + L.MTVEC]) & MASK64
        return {base & ~3}

    @staticmethod
    def _reads_clock(instruction) -> bool:
        address = instruction.device_load
        return address is not None and any(
            start <= address < start + size for start, size in CLOCK_REGISTERS)

    def _diverge(self, kind, step, index, lines, before, qemu) -> None:
        lines = list(lines)
        if qemu is not None:
            ours = self.machine.harts[index].state
            lines.append("registers (QEMU / hartvm), before the step -> after:")
            for n in range(1, 33):
                slot = L.PC if n == 32 else n
                old, new = int(before[slot]) & MASK64, int(ours[slot]) & MASK64
                if old != new or qemu[n] != new:
                    lines.append(f"  {_name(n):>4} {old:#018x} -> QEMU {qemu[n]:#018x} / "
                                 f"hartvm {new:#018x}")
        lines.append(f"last instructions of hart {index}:")
        for number, instruction in self.recent[index]:
            lines.append(f"  step {number:>7}  {instruction.pc:016x}  {instruction.text()}")
        self.result.divergence = Divergence(kind, step, index, lines)


def _update_timers(state) -> None:
    """mip.MTIP (and Sstc's STIP) from the hart's clock, as its run loop sets them
    before it looks for an interrupt (cpu/interp.py, timer)."""
    now = int(mtime(state)) & MASK64
    for compare, bit, on in ((int(state[L.MTIMECMP]) & MASK64, L.MIP_MTIP, True),
                             (int(state[L.CSR + L.STIMECMP]) & MASK64, L.MIP_STIP,
                              state[L.CSR + L.MENVCFG] < 0)):
        if not on:
            continue
        if now >= compare:
            state[L.CSR + L.MIP] |= bit
        else:
            state[L.CSR + L.MIP] &= ~bit


def _jumps_to_itself(instruction) -> bool:
    """``j .`` or a branch to itself: the one instruction whose step leaves pc as it was."""
    insn = instruction.insn
    opcode = insn & 0x7F
    if opcode == 0x6F:                                   # jal with offset 0
        return insn >> 12 == 0
    if opcode == 0x63:                                   # branch with offset 0
        return insn & 0xFE000F80 == 0
    return False


def _name(regnum: int) -> str:
    return "pc" if regnum == PC_REGNUM else XNAMES[regnum]


def lockstep(elf: str, harts: int = 1, memory: int = 128 << 20, drives=(), quantum: int = 8,
             max_steps: int = 1_000_000, qemu: str | None = None) -> Result:
    """Run ``elf`` on both machines in lockstep; the Result says how far they agree."""
    with Lockstep(elf, harts, memory, drives, quantum, qemu=qemu) as both:
        return both.run(max_steps)


def report(result: Result) -> str:
    lines = [f"{result.steps} steps compared; {result.synced} counter and clock reads "
             f"taken from QEMU"]
    lines += [f"note: {note}" for note in result.notes]
    if result.divergence:
        lines.append(str(result.divergence))
    elif result.ended:
        lines.append(f"no divergence: both ended, QEMU with status {result.qemu_status}, "
                     f"hartvm with {result.hartvm_status}")
    else:
        lines.append("no divergence so far (step limit reached)")
    if result.qemu_output != result.hartvm_output:
        lines.append(f"console output differs: QEMU {result.qemu_output!r}, "
                     f"hartvm {result.hartvm_output!r}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hartvm.vmm.lockstep",
        description="Run a bare-metal RISC-V ELF on QEMU and hartvm in lockstep and report "
                    "the first divergence of pc, registers or device reads.")
    parser.add_argument("elf")
    parser.add_argument("--smp", type=int, default=1, metavar="N")
    parser.add_argument("--memory", type=int, default=128, metavar="MIB")
    parser.add_argument("--drive", action="append", default=[], metavar="PATH[,readonly]",
                        help="a raw image as a virtio-blk device, on both machines (hartvm "
                             "opens it for writing: give each machine its own copy if "
                             "the program writes)")
    parser.add_argument("--quantum", type=int, default=8, metavar="N",
                        help="instructions each hart runs per turn (default 8)")
    parser.add_argument("--max-steps", type=int, default=1_000_000, metavar="N")
    parser.add_argument("--qemu", metavar="PATH", help="qemu-system-riscv64 to use")
    args = parser.parse_args(argv)
    try:
        result = lockstep(args.elf, args.smp, args.memory << 20, args.drive, args.quantum,
                          args.max_steps, args.qemu)
    except HartvmError as error:
        print(f"lockstep: {error}", file=sys.stderr)
        return 2
    print(report(result))
    return 1 if result.divergence else 0


if __name__ == "__main__":
    sys.exit(main())
