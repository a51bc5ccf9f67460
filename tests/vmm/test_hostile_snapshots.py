"""Generated hostile snapshots (issue 16): mutations of two real snapshots, made
by introspecting them rather than by listing a few cases.

Two snapshots are taken once: a small VM that wrote a file, and one with a
1 MiB drive. From them the suite generates

* field mutations: every section, every field (recursively into dicts and
  lists, a bounded sample of list items), every section's version and name,
  each replaced by values of other types, out-of-range values, shorter and
  longer lists, bytes and strings, other arrays, a key removed or added;
  sampled deterministically down to FIELD_BUDGET, every section in turn;
* array element mutations: the slots of the harts' state array (registers,
  the hart's bookkeeping, the named CSRs, a few others) set to edge values;
* the mutations that the full sweep (HARTVM_HOSTILE_SNAPSHOTS=full: every
  field and slot mutation, not a sample) found mishandled, one of each kind;
* raw byte damage of ``state`` with a recomputed CRC, in structural bytes
  (count, name lengths, versions, payload lengths, payload heads) and anywhere;
* ``state`` cut at every structural boundary (and random offsets), with and
  without a recomputed CRC, or extended: each must be refused;
* ``state``, ``memory`` and ``disk0`` missing, empty, shorter, longer,
  replaced by a directory, a FIFO, a socket, a device, symlinks or hard links;
  the snapshot path itself odd; unexpected extra files beside the snapshot's.

Each case is a copy of a snapshot (``state`` copied, the big files hard
linked, and copied sparse before any change to them) handed to a worker
process, which calls ``VM.restore``, and if that works runs ``true`` and
closes the VM. A worker, not this process: a restored state reaches numba's
code, which has no bounds checks, so a bad one could crash the host process;
a crash or a hang (TIME_LIMIT seconds) then ends one case, not the suite.

A case must end in a refusal (a ``SnapshotError`` or another ``HartvmError``,
its message one line of at most MESSAGE_LIMIT characters) or in a VM that
restores and then runs ``true`` with status 0 or fails with a ``HartvmError``
(a ``GuestError`` for a guest that does not answer) -- never another
exception, a crash or a hang; and it must leave no descriptor or scratch
directory behind. The originals are never written. The last test checks and
prints the counts (``pytest -s`` shows them).
"""

import copy
import gc
import hashlib
import json
import os
import random
import select
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

TIME_LIMIT = 60          # seconds a case may take (restore, true, close) before it is a hang
RUN_TIMEOUT = 30         # host seconds for the restored guest's ``true``
# HARTVM_HOSTILE_SNAPSHOTS=full tries every field and slot mutation instead of a sample
# (about 14,000 cases: an hour or two).
FULL = os.environ.get("HARTVM_HOSTILE_SNAPSHOTS") == "full"
FIELD_BUDGET = None if FULL else 300      # field mutations, sampled from all of them
ELEMENT_BUDGET = None if FULL else 40     # mutations of the hart state array's slots
MESSAGE_LIMIT = 2000     # characters of a refusal's one line: what a user can still read
RANDOM_DAMAGE = 24       # byte changes anywhere in state (valid CRC)
STRUCTURAL_DAMAGE = 24   # byte changes in the structure of state (valid CRC)
RANDOM_CUTS = 12         # truncations of state at random offsets (besides the boundaries)
SEED = 16                # the number: the sample is the same every run
WALK_DEPTH = 6           # how deep field mutations go into a section's value
LIST_ITEMS = 3           # items of a list whose fields are mutated: first, middle, last

# Outcomes: the first three are fine, the others bugs.
FINE = ("refused", "worked", "guest-failed")
BUGS = ("unexpected", "hung", "crashed", "bad-message", "nonzero", "leak", "accepted",
        "written")
RESULTS: list[dict] = []      # every case's outcome, in order (for the counts)


# --- the worker (a process of its own) --------------------------------------------------

def _attempt(path: str) -> dict:
    """Restore ``path``, run ``true``, close: the outcome as a dict."""
    import hartvm
    try:
        vm = hartvm.VM.restore(path)
    except hartvm.HartvmError as error:         # SnapshotError, or e.g. a bad saved hostname
        message = str(error)
        if not message or "\n" in message or len(message) > MESSAGE_LIMIT:
            return {"outcome": "bad-message",
                    "detail": f"{type(error).__name__} of {len(message)} characters, "
                              f"{message.count(chr(10)) + 1} lines: {message[:300]!r}"}
        return {"outcome": "refused", "detail": f"{type(error).__name__}: {message}"}
    except BaseException as error:          # noqa: BLE001 -- the bug this suite looks for
        return {"outcome": "unexpected", "detail": "restore: " + _trace(error)}
    result = {"outcome": "worked", "detail": ""}
    try:
        status = vm.run(["true"], timeout=RUN_TIMEOUT).returncode
        if status != 0:
            result = {"outcome": "nonzero", "detail": f"true exited with {status}"}
    except hartvm.HartvmError as error:
        result = {"outcome": "guest-failed", "detail": f"{type(error).__name__}: {_line(error)}"}
    except BaseException as error:          # noqa: BLE001
        result = {"outcome": "unexpected", "detail": "run: " + _trace(error)}
    try:
        vm.close()
    except hartvm.HartvmError:
        pass
    except BaseException as error:          # noqa: BLE001
        if result["outcome"] != "unexpected":
            result = {"outcome": "unexpected", "detail": "close: " + _trace(error)}
    return result


def _line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0][:200]


def _trace(error: BaseException) -> str:
    """``Type: message`` and where it was raised: the last frames, one line."""
    frames = traceback.extract_tb(error.__traceback__)[-4:]
    where = " <- ".join(f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
                        for frame in reversed(frames))
    return f"{type(error).__name__}: {_line(error)} [at {where}]"


def _worker_main() -> None:
    """Answer each line (a JSON request: the snapshot path) with a JSON line."""
    import faulthandler
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                 # whatever else is printed goes to the log, not the answers
    faulthandler.enable()         # a crash leaves its Python stack in the log
    scratch = Path(tempfile.gettempdir())
    baseline = None
    while line := sys.stdin.readline():
        request = json.loads(line)
        faulthandler.dump_traceback_later(TIME_LIMIT - 5)     # a hang leaves its stack too
        start = time.monotonic()
        result = _attempt(request["path"])
        result["seconds"] = round(time.monotonic() - start, 3)
        faulthandler.cancel_dump_traceback_later()
        fds = len(os.listdir("/proc/self/fd"))
        if baseline is None or fds > baseline:      # what only a collection would close
            gc.collect()
            fds = len(os.listdir("/proc/self/fd"))
        left = sorted(entry.name for entry in scratch.iterdir())
        if baseline is not None and (fds > baseline or left) and result["outcome"] in FINE:
            result = {"outcome": "leak", "seconds": result["seconds"],
                      "detail": f"after {result['outcome']} ({result['detail'][:80]}): "
                                f"{fds - baseline} more descriptors, left in TMPDIR: {left}"}
        for name in left:
            shutil.rmtree(scratch / name, ignore_errors=True)
        if baseline is None or request.get("baseline") or fds > baseline:
            baseline = fds            # a leak is reported once, not again by every later case
        answers.write(json.dumps(result) + "\n")


class Worker:
    """The worker process, started again after a crash or a hang."""

    def __init__(self, directory: Path, pristine: Path):
        self.directory = directory
        self.pristine = pristine
        self.process = None
        self.starts = 0

    def _start(self) -> None:
        self.starts += 1
        scratch = self.directory / f"tmp-{self.starts}"
        scratch.mkdir()
        self.log = self.directory / f"worker-{self.starts}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env=dict(os.environ, TMPDIR=str(scratch)), cwd=self.directory)
        self.buffer = b""
        # The first restore loads numba's code; it also sets the descriptor baseline.
        warm = self._ask(str(self.pristine), baseline=True)
        assert warm["outcome"] == "worked", f"the unchanged snapshot does not restore: {warm}"

    def ask(self, path: Path) -> dict:
        if self.process is None:
            self._start()
        return self._ask(str(path))

    def _ask(self, path: str, baseline: bool = False) -> dict:
        start = time.monotonic()
        self.process.stdin.write(json.dumps({"path": path, "baseline": baseline}).encode() + b"\n")
        self.process.stdin.flush()
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            left = TIME_LIMIT - (time.monotonic() - start)
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._stop()
                return {"outcome": "hung", "seconds": round(time.monotonic() - start, 1),
                        "detail": f"no answer in {TIME_LIMIT} s; {self._log_tail()}"}
            chunk = os.read(fd, 65536)
            if not chunk:
                status = self.process.wait()
                self.process = None
                return {"outcome": "crashed", "seconds": round(time.monotonic() - start, 1),
                        "detail": f"the worker died with status {status}; {self._log_tail()}"}
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def _log_tail(self) -> str:
        text = self.log.read_bytes()[-1500:].decode(errors="replace")
        return " | ".join(line.strip() for line in text.splitlines()[-12:])

    def _stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def close(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._stop()
            self.process = None


# --- the snapshots, copies of them, and running cases -----------------------------------

@dataclass
class Case:
    category: str
    label: str
    source: str                                 # "plain" or "disk": which snapshot
    mutate: Callable[[Path], None] | None       # changes the copy in place
    must_refuse: bool = False                   # e.g. a truncated state file
    section: str = ""                           # the section a field mutation changes


@dataclass
class Originals:
    paths: dict             # name -> snapshot directory
    sections: dict          # name -> read_state()
    digests: dict           # name -> {file: sha256}
    work: Path              # where the copies go
    worker: Worker
    drive: Path             # the drive the disk snapshot was taken with


def _digests(directory: Path) -> dict:
    result = {}
    for entry in sorted(directory.iterdir()):
        digest = hashlib.sha256()
        with open(entry, "rb") as file:
            while chunk := file.read(1 << 22):
                digest.update(chunk)
        result[entry.name] = digest.hexdigest()
    return result


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    import hartvm
    from hartvm.vmm import snapshot
    base = tmp_path_factory.mktemp("hostile-snapshots")
    plain, disk = base / "plain", base / "disk"
    with hartvm.VM(memory="128M", progress=False) as vm:
        vm.run(["sh", "-c", "echo before-snapshot > /root/marker"], check=True)
        vm.snapshot(plain)
    drive = base / "drive.img"
    drive.write_bytes(b"drive" * 1000 + bytes((1 << 20) - 5000))
    with hartvm.VM(memory="128M", drives=[str(drive)], progress=False) as vm:
        vm.run(["sh", "-c", "printf saved | dd of=/dev/vda bs=512 seek=8 conv=notrunc,fsync"],
               check=True)
        vm.snapshot(disk)
    paths = {"plain": plain, "disk": disk}
    work = base / "cases"
    work.mkdir()
    (base / "worker").mkdir()
    worker = Worker(base / "worker", plain)
    try:
        yield Originals(paths, {name: snapshot.read_state(path) for name, path in paths.items()},
                        {name: _digests(path) for name, path in paths.items()}, work, worker,
                        drive)
    finally:
        worker.close()


def _clone(source: Path, destination: Path) -> None:
    """A copy of a snapshot: ``state`` copied, the big files hard linked (a mutation
    that changes one first makes a private sparse copy: see ``_private``)."""
    destination.mkdir()
    for entry in source.iterdir():
        if entry.name == "state":
            shutil.copyfile(entry, destination / entry.name)
        else:
            os.link(entry, destination / entry.name)


def _private(path: Path) -> None:
    """Replace a hard link by a sparse copy of its own, which may then be changed."""
    copy_path = path.with_name(path.name + ".private")
    subprocess.run(["cp", "--sparse=always", str(path), str(copy_path)], check=True)
    os.replace(copy_path, path)


def _run_cases(originals: Originals, cases: list[Case]) -> list[dict]:
    """Run ``cases``; returns the bugs among their outcomes (and records all)."""
    bugs = []
    for index, case in enumerate(cases):
        directory = originals.work / f"{case.category}-{index}"
        if directory.exists() or directory.is_symlink():
            _remove(directory)
        start = time.monotonic()
        _clone(originals.paths[case.source], directory)
        if case.mutate is not None:
            case.mutate(directory)
        result = originals.worker.ask(directory)
        if case.must_refuse and result["outcome"] not in ("refused",) + BUGS:
            result = {"outcome": "accepted", "seconds": result.get("seconds"),
                      "detail": f"restored ({result['outcome']}), but must be refused"}
        result.update(category=case.category, label=f"{case.source}: {case.label}",
                      total_seconds=round(time.monotonic() - start, 3))
        RESULTS.append(result)
        if result["outcome"] in BUGS:
            bugs.append(result)
        _remove(directory)
    return bugs


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def _report(bugs: list[dict]) -> str:
    lines = [f"{len(bugs)} bugs:"]
    lines += [f"  [{bug['outcome']}] {bug['label']}: {bug['detail']}" for bug in bugs[:40]]
    return "\n".join(lines)


# --- values that do not belong ----------------------------------------------------------

def _nested(depth: int):
    value = None
    for _ in range(depth):
        value = [value]
    return value


# Values of every type the format holds, and edge values (label, value).
HOSTILE = [
    ("None", None), ("False", False), ("True", True), ("0", 0), ("-1", -1),
    ("2**31", 2**31), ("2**63-1", 2**63 - 1), ("2**63", 2**63), ("2**64", 2**64),
    ("-2**63", -2**63), ("-2**64-1", -2**64 - 1), ("2**1000", 2**1000),
    ("b''", b""), ("b'\\xff'*4096", b"\xff" * 4096), ("''", ""), ("'x'*4096", "x" * 4096),
    ("'/etc/passwd'", "/etc/passwd"), ("'\\0'", "\0"), ("'é'", "é"),
    ("[]", []), ("[None]", [None]), ("[0]*200000", [0] * 200_000), ("nested 14 deep", _nested(14)),
    ("{}", {}), ("{'': None}", {"": None}), ("{'x'*1000: 1}", {"x" * 1000: 1}),
    ("int64[0]", np.zeros(0, "<i8")), ("int64[4] of -1", np.full(4, -1, "<i8")),
    ("uint8[2,3]", np.zeros((2, 3), "u1")), ("uint64[8] of 2**64-1", np.full(8, 2**64 - 1, "<u8")),
    ("int32[1,1,1,1,1,1,1]", np.zeros((1,) * 7, "<i4")),
]


def _variants(value) -> list[tuple[str, object]]:
    """Values near ``value``, of its own type: off by one, shorter, longer, other arrays."""
    if isinstance(value, bool):
        return [("not", not value)]
    if isinstance(value, int):
        return [("+1", value + 1), ("-1", value - 1), ("negated", -value - 1),
                ("top bit", value ^ (1 << 63)), ("<<32", value << 32)]
    if isinstance(value, bytes):
        return [("one byte shorter", value[:-1]), ("one byte longer", value + b"\0"),
                ("half", value[:len(value) // 2]), ("doubled", value * 2)]
    if isinstance(value, str):
        return [("+'x'", value + "x"), ("upper", value.upper() + "-"), ("as bytes", value.encode())]
    if isinstance(value, list):
        return [("one item shorter", value[:-1]), ("one item longer", value + value[-1:] or [0]),
                ("doubled", value * 2), ("wrapped", [value]), ("reversed", value[::-1]),
                ("as a dict", {str(i): item for i, item in enumerate(value)})]
    if isinstance(value, dict):
        return [(f"without {key!r}", {k: v for k, v in value.items() if k != key})
                for key in value] + [
                ("with an extra key", {**value, "unexpected": 1}),
                ("every value None", {key: None for key in value}),
                ("as a list", list(value.values()))]
    if isinstance(value, np.ndarray):
        result = [(f"as {dtype}", value.astype(dtype)) for dtype in ("<u8", "<i4", "u1")
                  if np.dtype(dtype) != value.dtype]
        flat = value.reshape(-1)
        return result + [("one element shorter", flat[:-1].copy()),
                         ("one element longer", np.append(flat, flat[-1:]).astype(value.dtype)),
                         ("2-D", flat[:len(flat) // 2 * 2].reshape(2, -1).copy()),
                         ("all zero", np.zeros_like(value)), ("all -1", np.full_like(value, -1))]
    return []


def _nodes(value, path=(), depth=0):
    """(path, value) of ``value`` and everything in it: dict values, a few list items."""
    yield path, value
    if depth >= WALK_DEPTH:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, path + (key,), depth + 1)
    elif isinstance(value, list) and value:
        for index in sorted({0, len(value) // 2, len(value) - 1})[:LIST_ITEMS]:
            yield from _nodes(value[index], path + (index,), depth + 1)


def _path_text(path) -> str:
    return "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path)


def _round_robin(groups: list[list], rng: random.Random) -> list:
    """Every group's items in turn (each group shuffled): the first of each group,
    then the second, ...; so a prefix of the result covers every group."""
    groups = [list(group) for group in groups if group]
    for group in groups:
        rng.shuffle(group)
    rng.shuffle(groups)
    return [group[index] for index in range(max(map(len, groups), default=0))
            for group in groups if index < len(group)]


def _write_sections(directory: Path, sections: list[tuple[str, int, object]]) -> None:
    from hartvm.vmm import snapshot
    (directory / "state").unlink()
    snapshot.write_state(directory / "state", sections)


def _field_case(source: str, sections: dict, section: str, path, label: str, value) -> Case:
    def mutate(directory):
        changed = copy.deepcopy(sections)
        version, root = changed[section]
        if path:
            container = root
            for key in path[:-1]:
                container = container[key]
            container[path[-1]] = value
        else:
            root = value
        changed[section] = (version, root)
        _write_sections(directory, [(name, v, x) for name, (v, x) in changed.items()])
    return Case("field", f"{section}{_path_text(path)} = {label}", source, mutate,
                section=section)


def _section_cases(source: str, sections: dict, section: str) -> list[Case]:
    """The section as a whole: its version, its name, missing, twice, moved."""
    items = [(name, version, value) for name, (version, value) in sections.items()]
    index = [name for name, _, _ in items].index(section)
    name, version, value = items[index]
    changes = [(f"version {v}", items[:index] + [(name, v, value)] + items[index + 1:])
               for v in (0, version + 1, 2**32 - 1)]
    changes += [(f"renamed {new!r}", items[:index] + [(new, version, value)] + items[index + 1:])
                for new in (name + "1", "", name.upper(), "é" * 40)]
    changes += [("missing", items[:index] + items[index + 1:]),
                ("twice", items[:index + 1] + items[index:]),
                ("moved to the end", items[:index] + items[index + 1:] + [items[index]]),
                ("and an unknown section", items[:index + 1] + [("unknown", 1, {})] +
                 items[index + 1:])]
    cases = []
    for label, changed in changes:
        def mutate(directory, changed=changed):
            _write_sections(directory, changed)
        cases.append(Case("field", f"section {section}: {label}", source, mutate,
                          section=section))
    return cases


def _field_cases(originals: Originals) -> list[Case]:
    """Every (snapshot, section) a group; in each, every field path a group of its
    hostile values: round robin over both levels, down to FIELD_BUDGET."""
    rng = random.Random(SEED)
    by_section = []
    for source, sections in originals.sections.items():
        for section, (_, root) in sections.items():
            paths = [_section_cases(source, sections, section)]
            for path, value in _nodes(root):
                values = HOSTILE + _variants(value)
                paths.append([_field_case(source, sections, section, path, label, new)
                              for label, new in values])
            by_section.append(_round_robin(paths, rng))
    return _round_robin(by_section, rng)[:FIELD_BUDGET]


def _slots() -> list[tuple[str, int]]:
    """The hart state's slots to mutate: everything below the CSRs (named in the
    layout), the named CSRs, a few unnamed CSRs and TLB entries."""
    from hartvm.cpu import layout as L
    names = {value: name for name, value in vars(L).items()
             if name.isupper() and type(value) is int and L.PC <= value <= L.SEIP_LINE}
    slots = [(f"x{index}", L.XREG + index) for index in range(32)]
    slots += [(f"f{index}", L.FREG + index) for index in range(32)]
    slots += [(names.get(index, f"slot {index}"), index)
              for index in range(L.PC, L.SEIP_LINE + 1)]
    csrs = ["FFLAGS", "FRM", "FCSR", "SSTATUS", "SIE", "STVEC", "SCOUNTEREN", "SENVCFG",
            "SSCRATCH", "SEPC", "SCAUSE", "STVAL", "SIP", "SATP", "MSTATUS", "MISA", "MEDELEG",
            "MIDELEG", "MIE", "MTVEC", "MCOUNTEREN", "MENVCFG", "MCOUNTINHIBIT", "MSCRATCH",
            "MEPC", "MCAUSE", "MTVAL", "MIP", "PMPCFG0", "PMPADDR0", "MCYCLE", "MINSTRET",
            "CYCLE_CSR", "TIME_CSR", "INSTRET_CSR"]
    slots += [(name, L.CSR + getattr(L, name)) for name in csrs if hasattr(L, name)]
    rng = random.Random(SEED)
    slots += [(f"CSR {number:#x}", L.CSR + number) for number in rng.sample(range(4096), 6)]
    slots += [(f"TLB + {offset}", L.TLB + offset)
              for offset in rng.sample(range(L.STATE_SIZE - L.TLB), 4)]
    return slots


def _element_case(sections: dict, hart: str, name: str, index: int, label: str,
                  value: int) -> Case:
    def mutate(directory):
        changed = copy.deepcopy(sections)
        changed[hart][1]["state"][index] = value
        _write_sections(directory, [(n, v, x) for n, (v, x) in changed.items()])
    return Case("element", f"{hart}.state[{name}] = {label}", "plain", mutate, section=hart)


def _element_cases(originals: Originals) -> list[Case]:
    rng = random.Random(SEED + 1)
    sections = originals.sections["plain"]
    harts = [name for name in sections if name.startswith("hart")]
    values = [("0", 0), ("-1", -1), ("1", 1), ("2**63-1", 2**63 - 1), ("-2**63", -2**63),
              ("2**40+0x123", 2**40 + 0x123), ("0x80000000", 0x8000_0000)]
    groups = []
    for name, index in _slots():
        groups.append([_element_case(sections, hart, name, index, label, value)
                       for hart in harts
                       for label, value in values + [("random", rng.getrandbits(64) - 2**63)]])
    return _round_robin(groups, rng)[:ELEMENT_BUDGET]


def _known_cases(originals: Originals) -> list[Case]:
    """Mutations that the full sweep (HARTVM_HOSTILE_SNAPSHOTS=full) found to be
    mishandled, tried every run whatever the sample holds: one of each kind."""
    from hartvm.cpu import layout as L
    sections = originals.sections["plain"]
    cases = [
        # ``if vm_state.get("network_card")``: the truth value of an array
        _field_case("plain", sections, "vm", ("network_card",), "uint8[2,3]",
                    np.zeros((2, 3), "u1")),
        # the refusal quotes numpy's repr of the value: a message of several lines
        _field_case("plain", sections, "config", ("harts",), "uint8[2,3]",
                    np.zeros((2, 3), "u1")),
        # the refusal quotes the whole value: a line of 600 KB
        _field_case("plain", sections, "machine", ("virtio",), "[0]*200000", [0] * 200_000),
        # OpenSBI's trap handler finds no stack: a trap on a trap, each an MMIO exit to
        # Python, and the restore's first command is bounded by instructions only
        _element_case(sections, "hart0", "MSCRATCH", L.CSR + L.MSCRATCH, "0", 0),
    ]
    for case in cases:
        case.category = "known"
    return cases


# --- the state file's bytes ---------------------------------------------------------------

def _structure(data: bytes) -> list[tuple[int, int, int, int]]:
    """Each section's (start, name end, payload start, payload end) in ``state``."""
    from hartvm.vmm.snapshot import HEADER, SECTION
    _, _, count = HEADER.unpack_from(data)
    position, result = HEADER.size, []
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, position)
        name_end = position + 2 + length
        _, payload_length = SECTION.unpack_from(data, name_end)
        payload = name_end + SECTION.size
        result.append((position, name_end, payload, payload + payload_length))
        position = payload + payload_length
    assert position == len(data) - 4
    return result


def _with_crc(data: bytes) -> bytes:
    return bytes(data) + struct.pack("<I", zlib.crc32(data))


def _state_bytes(originals: Originals, source: str) -> bytes:
    return (originals.paths[source] / "state").read_bytes()


def _set_state(data: bytes):
    def mutate(directory):
        (directory / "state").write_bytes(data)
    return mutate


def _damage_cases(originals: Originals) -> list[Case]:
    rng = random.Random(SEED + 2)
    data = _state_bytes(originals, "disk")
    body = data[:-4]
    structural = list(range(12, 16))            # the section count
    for start, name_end, payload, end in _structure(data):
        structural += list(range(start, start + 2))            # name length
        structural += list(range(name_end, payload))           # version, payload length
        structural += list(range(payload, min(payload + 16, end)))   # the value's head
    cases = []
    for kind, positions, count in (("structural", structural, STRUCTURAL_DAMAGE),
                                   ("anywhere", range(12, len(body)), RANDOM_DAMAGE)):
        for _ in range(count):
            changed = bytearray(body)
            for position in rng.sample(positions, rng.choice([1, 1, 2, 3])):
                changed[position] = rng.choice([0, 0xFF, changed[position] ^ 1,
                                                changed[position] ^ 0x80, rng.randrange(256)])
            label = f"{kind} bytes changed ({zlib.crc32(changed):08x})"
            cases.append(Case("damage", label, "disk", _set_state(_with_crc(changed))))
    # Edge values in the fields of the structure.
    first_start, first_name_end, _, _ = _structure(data)[0]
    for label, offset, fmt, value in [
            ("section count 0", 12, "<I", 0), ("section count 2**32-1", 12, "<I", 2**32 - 1),
            ("section count +1", 12, "<I", len(_structure(data)) + 1),
            ("first name length 0xffff", first_start, "<H", 0xFFFF),
            ("first payload length 2**64-1", first_name_end + 4, "<Q", 2**64 - 1),
            ("first payload length 2**63", first_name_end + 4, "<Q", 2**63)]:
        changed = bytearray(body)
        struct.pack_into(fmt, changed, offset, value)
        cases.append(Case("damage", label, "disk", _set_state(_with_crc(changed)),
                          must_refuse=True))
    return cases


def _cut_cases(originals: Originals) -> list[Case]:
    """``state`` cut short (keeping the CRC's place or given a new CRC), or extended:
    every one must be refused."""
    rng = random.Random(SEED + 3)
    cases = []
    for source in originals.paths:
        data = _state_bytes(originals, source)
        offsets = {0, 1, 7, 8, 12, 15, 16, len(data) - 1, len(data) - 4, len(data) - 5}
        offsets |= set(rng.sample(range(len(data)), RANDOM_CUTS))
        for offset in sorted(offsets):         # the CRC no longer matches
            cases.append(Case("cut", f"state cut to {offset} bytes", source,
                              _set_state(data[:offset]), must_refuse=True))
        # Well-formed but cut: at every boundary of the structure, a new CRC.
        if source == "disk":
            for start, name_end, payload, end in _structure(data):
                offsets |= {start, start + 1, name_end, payload - 1, payload + 1, end - 1}
        for offset in sorted(offsets):
            if offset >= 16 + 4:
                cases.append(Case("cut", f"state cut to {offset} bytes, CRC recomputed", source,
                                  _set_state(_with_crc(data[:offset - 4])), must_refuse=True))
        for extra in (b"\0", b"N", bytes(4096)):
            cases.append(Case("cut", f"state extended by {len(extra)} bytes, CRC recomputed",
                              source, _set_state(_with_crc(data[:-4] + extra)), must_refuse=True))
    return cases


# --- the snapshot's files -------------------------------------------------------------------

def _replace_with(make):
    """A mutation replacing the file (by name) with what ``make(path)`` makes."""
    def mutation(name):
        def mutate(directory):
            path = directory / name
            _remove(path)
            make(path, directory)
        return mutate
    return mutation


def _resized(delta_or_size, absolute=False):
    def mutation(name):
        def mutate(directory):
            path = directory / name
            _private(path)
            size = path.stat().st_size
            os.truncate(path, delta_or_size if absolute else size + delta_or_size)
        return mutate
    return mutation


def _socket(path: Path, directory) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()


def _device(path: Path, directory) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))     # /dev/zero
    except PermissionError:
        os.symlink("/dev/zero", path)


def _sparse_file(size: int):
    def make(path: Path, directory) -> None:
        with open(path, "wb") as file:
            file.truncate(size)
    return make


def _file_cases(originals: Originals) -> list[Case]:
    random_drive = originals.work.parent / "random-drive.img"
    random_drive.write_bytes(random.Random(SEED).randbytes(1 << 20))
    refused = {      # name -> what replaces it (each must be refused)
        "missing": lambda path, directory: None,
        "empty": _sparse_file(0),
        "a directory": lambda path, directory: path.mkdir(),
        "a FIFO": lambda path, directory: os.mkfifo(path),
        "a socket": _socket,
        "a character device": _device,
        "a symlink to the original": None,           # per file, below
        "a symlink to /etc/passwd": lambda path, directory: os.symlink("/etc/passwd", path),
        "a symlink to /dev/zero": lambda path, directory: os.symlink("/dev/zero", path),
        "a dangling symlink": lambda path, directory: os.symlink("no-such-file", path),
        "a symlink to its directory": lambda path, directory: os.symlink(".", path),
    }
    cases = []
    for source, name in (("plain", "state"), ("plain", "memory"), ("disk", "disk0")):
        original = originals.paths[source] / name
        for label, make in refused.items():
            if make is None:
                make = lambda path, directory, original=original: os.symlink(original, path)
            cases.append(Case("file", f"{name}: {label}", source, _replace_with(make)(name),
                              must_refuse=True))
        size = original.stat().st_size
        for label, change in [("one byte shorter", _resized(-1)),
                              ("a page shorter", _resized(-4096)),
                              ("one byte longer", _resized(1)),
                              ("a page longer", _resized(4096)),
                              ("twice as long", _resized(size)),
                              ("a sparse 300 MiB", _resized(300 << 20, absolute=True))]:
            # A drive's size is in whole sectors: one byte more still reads the same disk.
            refuse = not (name == "disk0" and label == "one byte longer")
            cases.append(Case("file", f"{name}: {label}", source, change(name),
                              must_refuse=refuse))
    plain, disk = originals.paths["plain"], originals.paths["disk"]
    hard_links = [      # (snapshot, file, label, target, must it be refused)
        ("plain", "state", "the other snapshot's state", disk / "state", True),
        ("plain", "state", "its memory", plain / "memory", True),
        ("disk", "memory", "the other snapshot's memory", plain / "memory", False),
        ("disk", "disk0", "its state", disk / "state", True),
        ("disk", "disk0", "the drive it was taken from", originals.drive, False),
        ("disk", "disk0", "1 MiB of random bytes", random_drive, False),
    ]
    for source, name, label, target, refuse in hard_links:
        def make(path, directory, target=target):
            os.link(target, path)
        cases.append(Case("file", f"{name}: a hard link to {label}", source,
                          _replace_with(make)(name), must_refuse=refuse))
    return cases


def _directory_cases(originals: Originals) -> list[Case]:
    """The snapshot path itself, files missing from it, and files it should not have."""
    def replace_directory(make):
        def mutate(directory):
            shutil.rmtree(directory)
            make(directory)
        return mutate

    def keep_only(*names):
        def mutate(directory):
            for entry in directory.iterdir():
                if entry.name not in names:
                    entry.unlink()
        return mutate

    def extra(name, make):
        def mutate(directory):
            make(directory / name)
        return mutate

    plain, disk = originals.paths["plain"], originals.paths["disk"]
    cases = [
        Case("directory", "the path does not exist", "plain",
             replace_directory(lambda path: None), must_refuse=True),
        Case("directory", "the path is a regular file", "plain",
             replace_directory(lambda path: path.write_bytes(b"HARTVMSS")), must_refuse=True),
        Case("directory", "the path is a FIFO", "plain",
             replace_directory(lambda path: os.mkfifo(path)), must_refuse=True),
        Case("directory", "the path is a symlink to /dev/zero", "plain",
             replace_directory(lambda path: os.symlink("/dev/zero", path)), must_refuse=True),
        Case("directory", "the path is a symlink to the snapshot", "plain",
             replace_directory(lambda path: os.symlink(plain, path))),
        Case("directory", "an empty directory", "plain", keep_only(), must_refuse=True),
        Case("directory", "state alone", "plain", keep_only("state"), must_refuse=True),
        Case("directory", "memory alone", "plain", keep_only("memory"), must_refuse=True),
        Case("directory", "no disk0", "disk", keep_only("state", "memory"), must_refuse=True),
        Case("directory", "disk0 renamed disk1", "disk",
             lambda directory: os.rename(directory / "disk0", directory / "disk1"),
             must_refuse=True),
        Case("directory", "plain's state beside disk's memory and disk0", "disk",
             lambda directory: shutil.copyfile(plain / "state", directory / "state")),
        Case("directory", "disk's state beside plain's memory", "plain",
             lambda directory: shutil.copyfile(disk / "state", directory / "state"),
             must_refuse=True),
    ]
    extras = [
        ("disk1", "a hard link to disk0", lambda path: os.link(disk / "disk0", path)),
        ("disk1", "a FIFO", lambda path: os.mkfifo(path)),
        ("disk-1", "a file", lambda path: path.write_bytes(b"x")),
        ("memory.tmp", "a symlink to /dev/zero", lambda path: os.symlink("/dev/zero", path)),
        ("state~", "a FIFO", lambda path: os.mkfifo(path)),
        ("snapshot", "a directory with a state",
         lambda path: (path.mkdir(), (path / "state").write_bytes(b"x"))),
        (".hidden", "a symlink to /etc/passwd", lambda path: os.symlink("/etc/passwd", path)),
        ("socket", "a socket", lambda path: _socket(path, None)),
    ]
    for source in ("plain", "disk"):
        for name, label, make in extras:
            cases.append(Case("directory", f"an extra {name}, {label}", source,
                              extra(name, make)))
    return cases


# --- the tests ------------------------------------------------------------------------------

def test_every_field_of_every_section(originals):
    cases = _field_cases(originals)
    for source, sections in originals.sections.items():       # every section a few times
        covered = Counter(case.section for case in cases if case.source == source)
        assert all(covered[name] >= 4 for name in sections), covered
    bugs = _run_cases(originals, cases)
    assert not bugs, _report(bugs)


@pytest.mark.parametrize("generate", [
    _known_cases,          # what the full sweep found
    _element_cases,        # every slot of the hart state
    _damage_cases,         # changed bytes with a valid CRC
    _cut_cases,            # a cut or extended state is refused
    _file_cases,           # files of the wrong kind or size
    _directory_cases,      # the snapshot path, extra or missing files
], ids=lambda generate: generate.__name__.strip("_"))
def test_generated_cases(originals, generate):
    bugs = _run_cases(originals, generate(originals))
    assert not bugs, _report(bugs)


def test_counts_and_the_originals_are_untouched(originals):
    """Runs last: the counts of every outcome (printed), no bug among them, and the
    snapshots restored thousands of times over are unchanged."""
    for name, path in originals.paths.items():
        if _digests(path) != originals.digests[name]:
            RESULTS.append({"outcome": "written", "category": "originals", "label": name,
                            "detail": "the original snapshot's files changed"})
    outcomes = Counter(result["outcome"] for result in RESULTS)
    by_category = Counter((result["category"], result["outcome"]) for result in RESULTS)
    slowest = sorted(RESULTS, key=lambda result: -(result.get("total_seconds") or 0))[:3]
    lines = [f"hostile snapshots: {len(RESULTS)} tried; " +
             ", ".join(f"{outcome} {outcomes[outcome]}" for outcome in FINE + BUGS),
             "by category: " + "; ".join(
                 f"{category}: " + ", ".join(f"{outcome} {count}" for (c, outcome), count
                                             in sorted(by_category.items()) if c == category)
                 for category in dict.fromkeys(result["category"] for result in RESULTS)),
             f"worker starts: {originals.worker.starts}; slowest: " + "; ".join(
                 f"{result['label']} {result.get('total_seconds')} s ({result['outcome']})"
                 for result in slowest)]
    print("\n" + "\n".join(lines))
    bugs = [result for result in RESULTS if result["outcome"] in BUGS]
    assert RESULTS and not bugs, "\n".join(lines) + "\n" + _report(bugs)


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
