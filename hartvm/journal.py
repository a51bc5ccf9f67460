"""Record and replay of what the host gives a machine (issue 13).

A machine without host input is deterministic: the same images and options
give the same instructions and the same output (ARCHITECTURE.md, "Counting").
What comes from the host is not: bytes typed on the console, a command's
stdin, network frames, and in realtime mode the moments, on the host's clock,
at which they arrive. All of it reaches devices through the machine's
``HostIO`` (hostio.py), so that is where it is written down and given back:
devices know nothing of it.

``Recording`` writes down every delivery of host input to a device (which
input, the bytes its filter let through) and every end of input, each with
the **key** of the moment it happened: ``(position, boots, cycle)``, the
machine's instructions executed (``Machine.instructions``), the reboots
since it started, and hart 0's cycle counter since the last one (a reboot
sets it to 0, Hart.reset), which is also its clock: it runs on past the
instructions only while the hart sleeps in WFI. The key says everything the
host's clock decided: a sleeping hart's time matters only when something
wakes it, and that is a timer (the guest's own, deterministic) or a
delivery, whose cycle is in its key. So a replay needs no realtime: it skips
idle time as a reproducible run does, up to the next recorded key at most.

``Replay`` reads a record and stands in for the host: inputs are not read;
the machine cuts its rounds at the next key (``Machine._round``) and its poll
delivers there what the record holds. One hart only: with several, where a
round is cut decides how the harts interleave, so a replay could not cut
rounds where the record's keys are without changing the run.

The file (version 1) is UTF-8 JSON, one value a line, flushed after each line,
so that a run that is killed keeps its record up to its last second:

    {"format": "hartvm-record", "version": 1, "machine": "...", "images": "...", "code": "..."}
    ["input", POSITION, BOOTS, CYCLE, INPUT, "BASE64"]   bytes given to input INPUT
                                  (inputs are numbered in the order the front end added them)
    ["eof", POSITION, BOOTS, CYCLE, INPUT]               end of input INPUT
    ["mark", POSITION, BOOTS, CYCLE]           how far the run had got (once a second)
    ["end", POSITION, BOOTS, CYCLE, STATUS]    the run ended there with exit STATUS (last)

The header's digests say which machine made it (its options, boot images and
hartvm's code; a replay on another is refused). Keys never go back. A last
line without its newline is a write that a kill cut short and is left out.
"""

import base64
import binascii
import contextlib
import hashlib
import json
import os
import stat
import time

from .code_digest import code_digest
from .cpu import layout as L
from .errors import HartvmError, quoted

FORMAT = "hartvm-record"
VERSION = 1
IDENTITY = ("machine", "images", "code")      # what the header's digests are of
MARK_SECONDS = 1.0          # host seconds between marks of how far a recorded run got
MAX_LINE = 1 << 20          # characters of one line: a read of READ_SIZE bytes in base64 fits
MAX_RECORD = 256 << 20      # bytes of a record a replay reads (it holds all of it in memory)


class _Clock:
    """The keys of a machine's moments. A reboot is seen as hart 0's cycle counter
    going back at a poll (the first after a reboot comes before any instruction,
    at cycle 0)."""

    def __init__(self, machine):
        self.machine = machine
        self.boots = 0
        self.cycle = 0          # at the last look

    def now(self) -> tuple[int, int, int]:
        cycle = int(self.machine.harts[0].state[L.CYCLE])
        if cycle < self.cycle:
            self.boots += 1
        self.cycle = cycle
        return self.machine.instructions, self.boots, cycle


def _check_harts(machine, option: str, path: str) -> None:
    if len(machine.harts) != 1:
        # Where rounds are cut decides how harts interleave (see above).
        raise HartvmError(f"{option} {quoted(path)}: records are of machines with one hart "
                          f"(--smp 1)")


def identity(machine) -> dict[str, str]:
    """Digests of what makes a run of ``machine`` what it is, before it runs: its
    size, harts and devices; the images its reset loads into RAM (kernel,
    firmware, initrd, and the device tree, which holds the kernel command line);
    hartvm's code. (Not what a drive holds: a replay needs the same content.)"""
    images = hashlib.sha256()
    for blob in machine._blobs:
        images.update(blob.paddr.to_bytes(8, "little") + len(blob.data).to_bytes(8, "little"))
        images.update(blob.data)
    board = f"{machine.ram.size} {len(machine.harts)} {list(machine.board.virtio)}"
    return {"machine": hashlib.sha256(board.encode()).hexdigest(),
            "images": images.hexdigest(), "code": code_digest()}


class Recording:
    """Writes the record of a run of ``machine`` to ``path`` as the run goes."""
    replaying = False

    def __init__(self, path: str, machine):
        _check_harts(machine, "--record", path)
        self.path = path
        self._clock = _Clock(machine)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            info = None
        except OSError as error:
            raise self._failed(error) from None
        if info is not None and not stat.S_ISREG(info.st_mode):
            # (a FIFO would block the open, a device take the record nowhere)
            raise HartvmError(f"--record {quoted(path)}: not a regular file")
        try:
            self._file = open(path, "w", encoding="utf-8")
        except OSError as error:
            raise self._failed(error) from None
        self._marked = time.monotonic()
        self._write({"format": FORMAT, "version": VERSION, **identity(machine)})

    def _write(self, value) -> None:
        try:
            self._file.write(json.dumps(value, separators=(",", ":")) + "\n")
            self._file.flush()       # to the host's kernel: a killed run keeps it
        except OSError as error:     # (a full disk: the run cannot be recorded)
            raise self._failed(error) from None

    def _failed(self, error: OSError) -> HartvmError:
        return HartvmError(f"--record {quoted(self.path)}: {error.strerror or error}")

    def delivered(self, number: int, data: bytes) -> None:
        self._write(["input", *self._clock.now(), number, base64.b64encode(data).decode()])

    def ended(self, number: int) -> None:
        self._write(["eof", *self._clock.now(), number])

    def tick(self) -> None:
        """Between rounds: see reboots; mark how far the run got, once a host second."""
        key, now = self._clock.now(), time.monotonic()
        if now - self._marked >= MARK_SECONDS:
            self._marked = now
            self._write(["mark", *key])

    def close(self, status: int) -> None:
        """The run ended with exit ``status``: the last line, then to the disk."""
        if self._file.closed:
            return
        try:
            self._write(["end", *self._clock.now(), status])
            try:
                os.fsync(self._file.fileno())
            except OSError as error:
                raise self._failed(error) from None
        finally:
            with contextlib.suppress(OSError):     # (what _write said is enough)
                self._file.close()


class Replay:
    """A record read back for ``machine`` (all of it, and checked, before it runs)."""
    replaying = True

    def __init__(self, path: str, machine):
        _check_harts(machine, "--replay", path)
        self.path = path
        self._clock = _Clock(machine)
        lines = self._lines(path)
        if not lines:
            raise self._bad("it is empty")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise self._bad("it is not a hartvm record")
        if header.get("version") != VERSION:
            raise self._bad(f"format version {quoted(header.get('version'))}, this hartvm "
                            f"reads version {VERSION}")
        digests = identity(machine)
        for name in IDENTITY:
            if header.get(name) != digests[name]:
                what = {"machine": "memory size, harts or devices", "images": "kernel, "
                        "firmware, initrd or kernel command line", "code": "hartvm code"}[name]
                raise self._bad(f"it was made with other {what} than this run's")
        self.events: list[tuple[str, tuple, object]] = []    # ("input"|"eof", key, arg)
        # Where the recorded run ended, and its exit status (None: it was killed).
        self.end: tuple[int, int | None] = (0, None)
        self.cursor = 0
        self._parse(lines[1:])

    def _bad(self, why: str) -> HartvmError:
        return HartvmError(f"--replay {quoted(self.path)}: {why}")

    def _lines(self, path: str) -> list[str]:
        try:
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode):
                raise self._bad("not a regular file")
            with open(path, "rb") as file:
                data = file.read(MAX_RECORD + 1)
            if len(data) > MAX_RECORD:
                raise self._bad(f"larger than the {MAX_RECORD >> 20} MiB a replay reads")
        except OSError as error:
            raise self._bad(error.strerror or str(error)) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise self._bad("it is not a hartvm record") from None
        lines = text.split("\n")
        return lines[:-1]        # the last piece has no newline: empty, or a write cut short

    def _parse(self, lines: list[str]) -> None:
        last = (0, 0, 0)
        for number, line in enumerate(lines, 2):
            where = f"line {number}"
            if len(line) > MAX_LINE:
                raise self._bad(f"{where} is too long")
            try:
                event = json.loads(line)
            except ValueError:
                raise self._bad(f"{where} is no JSON") from None
            if not isinstance(event, list) or len(event) < 4 or \
                    event[0] not in ("input", "eof", "mark", "end") or \
                    not all(type(v) is int and 0 <= v < 1 << 63 for v in event[1:4]):
                raise self._bad(f"{where} is no event")
            kind, key = event[0], tuple(event[1:4])
            # Keys never go back: instructions, reboots, and since the last reboot
            # the cycles spent asleep (cycle - position) only grow.
            if key[0] < last[0] or key[1] < last[1] or \
                    key[1] == last[1] and key[2] - key[0] < last[2] - last[0]:
                raise self._bad(f"{where} goes back in time")
            if self.end[1] is not None:
                raise self._bad(f"{where} follows the end of the run")
            last = key
            arity = {"input": 6, "eof": 5, "mark": 4, "end": 5}[kind]
            if len(event) != arity or (arity > 4 and (type(event[4]) is not int or
                                                      not 0 <= event[4] < 1 << 31)):
                raise self._bad(f"{where} is no event")
            if kind == "input":
                try:
                    data = base64.b64decode(event[5], validate=True) \
                        if isinstance(event[5], str) else None
                except (binascii.Error, ValueError):
                    data = None
                if data is None:
                    raise self._bad(f"{where} holds no base64 bytes")
                self.events.append((kind, key, (event[4], data)))
            elif kind == "eof":
                self.events.append((kind, key, event[4]))
            elif kind == "end":
                if event[4] > 0xFF:
                    raise self._bad(f"{where} is no event")
                self.end = (key[0], event[4])
        if self.end[1] is None:
            self.end = (last[0], None)       # a run that was killed: as far as it got

    def next_key(self) -> tuple[int, int | None] | None:
        """(position, cycle) of the next recorded event, None after the last; its
        cycle is None while the guest has still to reboot before it comes."""
        if self.cursor >= len(self.events):
            return None
        position, boots, cycle = self.events[self.cursor][1]
        return position, cycle if boots == self._clock.boots else None

    def deliver_due(self, io) -> bool:
        """Deliver to ``io``'s inputs what the record holds for this moment; True
        if any. A moment past the next event's is a guest that went another way."""
        now = self._clock.now()
        moved = False
        while self.cursor < len(self.events):
            due = self.events[self.cursor][1]
            if now[0] > due[0] or now[1] > due[1] or \
                    now[1] == due[1] and now[2] - now[0] > due[2] - due[0]:
                raise HartvmError(
                    f"the guest diverged from the record {quoted(self.path)}: it is at "
                    f"instruction {now[0]} (cycle {now[2]}), the record's next input came at "
                    f"instruction {due[0]} (cycle {due[2]})")
            if now != due:
                break
            kind, _, arg = self.events[self.cursor]
            self.cursor += 1
            number = arg[0] if kind == "input" else arg
            source = next((s for s in io.inputs if s.number == number), None)
            if source is None:
                raise HartvmError(f"the record {quoted(self.path)} gives input to input "
                                  f"{number}, which this run does not have")
            if kind == "input":
                source.deliver(arg[1])     # (already filtered when it was recorded)
            elif source.on_end is not None:
                source.on_end()
            moved = True
        return moved

    def mark(self) -> tuple[int, int, int]:
        """Where the replay is, for ``seek``: a debugger's checkpoint keeps it."""
        return self.cursor, self._clock.boots, self._clock.cycle

    def seek(self, mark: tuple[int, int, int]) -> None:
        self.cursor, self._clock.boots, self._clock.cycle = mark
