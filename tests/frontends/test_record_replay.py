"""``hartvm boot --record FILE`` and ``--replay FILE`` (journal.py): keys typed
on a terminal at random host times, in realtime mode, replayed to the same
output and the same instruction count; a killed recording replayed as far as
it got; hostile and mismatched records refused with one line; a guest that
leaves the record's way stopped, not left hanging; reverse execution over
replayed input, through the Debugger and through gdb-multiarch."""

import base64
import json
import os
import pty
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from elftools.elf.elffile import ELFFile

from conftest import PROGRAMS, ROOT, _build_dir, build_c
from hartvm.errors import HartvmError

GDB = shutil.which("gdb-multiarch")


@pytest.fixture(scope="module")
def echo(toolchain):
    return build_c("echo")


def _boot(elf: str, *options: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hartvm", "boot", "--bios", "none", "--kernel", elf,
         "--memory", "16M", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, **kwargs)


def _type_on_a_terminal(elf: str, record: str, keys: bytes, kill: bool = False):
    """``boot --record`` with its stdin a terminal (so guest time is the host's),
    ``keys`` typed one at a time at random moments; (stdout, stderr, status)."""
    controller, terminal = pty.openpty()
    process = _boot(elf, "--record", record, "--stats", stdin=terminal)
    os.close(terminal)
    try:
        assert process.stdout.read(6) == b"ready\n"
        pace = random.Random()
        for key in keys:
            time.sleep(pace.uniform(0.05, 0.4))
            os.write(controller, bytes([key]))
        if kill:
            time.sleep(1.5)                 # a mark (once a second) after the last key
            process.send_signal(signal.SIGKILL)
        out, err = process.communicate(timeout=60)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    return b"ready\n" + out, err.decode(), process.returncode


def _replay(elf: str, record: str, *options: str):
    process = _boot(elf, "--replay", record, *options, stdin=subprocess.DEVNULL)
    out, err = process.communicate(timeout=60)
    return out, err.decode(), process.returncode


def _instructions(stderr: str) -> int:
    return int(re.search(r"hartvm: (\d+) instructions in", stderr).group(1))


def _events(record: str) -> list:
    with open(record) as file:
        return [json.loads(line) for line in file.read().splitlines()[1:]]


def test_keys_typed_in_realtime_replay_to_the_same_output_and_instructions(echo, tmp_path):
    record = str(tmp_path / "session.rec")
    out, err, status = _type_on_a_terminal(echo, record, b"hello q")
    assert status == 0, err
    assert out.count(b"key ") == 7 and out.endswith(b"ticks\n"), out
    inputs = [event for event in _events(record) if event[0] == "input"]
    assert b"".join(base64.b64decode(event[5]) for event in inputs) == b"hello q"
    assert len({event[1] for event in inputs}) > 1, inputs     # at several moments
    replayed, replay_err, replay_status = _replay(echo, record, "--stats")
    assert (replayed, replay_status) == (out, 0), replay_err
    assert _instructions(replay_err) == _instructions(err)


def test_a_killed_recording_replays_as_far_as_it_got(echo, tmp_path):
    record = str(tmp_path / "killed.rec")
    out, _, status = _type_on_a_terminal(echo, record, b"ab", kill=True)
    assert status == -signal.SIGKILL
    assert _events(record)[-1][0] == "mark"           # no end: a mark tells how far
    replayed, err, replay_status = _replay(echo, record)
    assert replay_status == 137, err                  # ended as the recorded run: killed
    assert replayed == out and out.count(b"key ") == 2, (replayed, out)
    assert err.strip().splitlines()[-1].startswith(
        "hartvm: the replay reached the end of the record at instruction"), err


@pytest.fixture(scope="module")
def piped_record(echo, tmp_path_factory):
    """A record of keys piped to stdin (all in the first poll), and its output."""
    record = str(tmp_path_factory.mktemp("records") / "piped.rec")
    result = subprocess.run(
        [sys.executable, "-m", "hartvm", "boot", "--bios", "none", "--kernel", echo,
         "--memory", "16M", "--record", record], input=b"xyq", capture_output=True,
        cwd=ROOT, timeout=60)
    assert result.returncode == 0 and result.stdout.count(b"key ") == 3, result
    return record


def _edited(record: str, path, edit) -> str:
    with open(record) as file:
        lines = file.read().splitlines()
    header, events = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    text = edit(header, events)
    if not isinstance(text, str):
        text = "".join(json.dumps(value) + "\n" for value in [header, *events])
    path.write_text(text)
    return str(path)


HOSTILE = {
    "empty": lambda header, events: "",
    "garbage": lambda header, events: "\x00\xff garbage\n",
    "no record": lambda header, events: '{"format": "something else"}\n',
    "other version": lambda header, events: header.update(version=2),
    "other code": lambda header, events: header.update(code="0" * 64),
    "no event": lambda header, events: events.insert(0, ["input", 1]),
    "bad base64": lambda header, events: events.insert(0, ["input", 1, 0, 1, 0, "!!"]),
    "back in time": lambda header, events: events.append(["mark", 0, 0, 0]),
    "after the end": lambda header, events: events.append(events[-1]),
    "no such input": lambda header, events: events.insert(0, ["input", 1, 0, 1, 7, "YQ=="]),
    "huge position": lambda header, events: events.insert(0, ["eof", 1 << 70, 0, 1 << 70, 0]),
    # Input while the guest sleeps at instruction 300, then runs on: it never does.
    "diverging": lambda header, events: events.__setitem__(
        slice(None), [["input", 300, 0, 10**9, 0, "cQ=="], ["mark", 5000, 0, 2 * 10**9]]),
}


def _main(capsys, *arguments: str) -> tuple[int, list[str]]:
    """``hartvm boot`` in this process (quicker than starting one): its status and
    the lines it wrote to stderr."""
    from hartvm.frontends.cli import main
    status = main(["boot", "--bios", "none", *arguments])
    return status, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_record_is_one_line_and_a_failure(echo, piped_record, tmp_path, case, capsys):
    record = _edited(piped_record, tmp_path / "hostile.rec", HOSTILE[case])
    started = time.monotonic()
    status, lines = _main(capsys, "--kernel", echo, "--memory", "16M", "--replay", record)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("hartvm: "), lines
    assert time.monotonic() - started < 30
    if case == "diverging":
        assert "diverged" in lines[0]


def test_a_record_of_another_machine_is_refused(echo, piped_record, capsys):
    status, lines = _main(capsys, "--kernel", echo, "--memory", "32M", "--replay", piped_record)
    assert status == 2 and "memory size" in lines[-1], lines
    status, lines = _main(capsys, "--kernel", build_c("printf"), "--memory", "16M",
                          "--replay", piped_record)
    assert status == 2 and "kernel" in lines[-1], lines


@pytest.mark.parametrize("options", [["--record", "R", "--replay", "R"],
                                     ["--record", "R", "--smp", "2"],
                                     ["--replay", "R", "--smp", "2"],
                                     ["--record", "R", "--gdb", "1"],
                                     ["--record", "/dev/null"],
                                     ["--record", "/nonexistent/dir/r"]])
def test_options_that_cannot_go_together_are_one_line(echo, piped_record, options, capsys):
    options = [piped_record if word == "R" else word for word in options]
    status, lines = _main(capsys, "--kernel", echo, "--memory", "16M", *options)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("hartvm: --"), lines


def _symbol(elf: str, name: str) -> int:
    with open(elf, "rb") as file:
        return ELFFile(file).get_section_by_name(".symtab").get_symbol_by_name(name)[0]["st_value"]


def test_reverse_execution_spans_replayed_input(echo, tmp_path):
    """The Debugger on a replay: breakpoint hits after two inputs, reverse-continue
    back over the second one to the first hit, and forward again over the
    second input, which is delivered again where it came."""
    from hartvm import HostIO, Machine
    from hartvm.journal import Recording, Replay
    from hartvm.vmm.debugger import Debugger

    def machine_for(journal_class, path):
        output = []
        machine = Machine(memory_size=16 << 20, io=HostIO(output=output.append))
        machine.load_kernel(echo)
        machine.io.journal = journal_class(path, machine)
        read, write = os.pipe()
        uart = machine.board.devices["uart0"]
        machine.io.add_input(read, uart.push_input, lambda: len(uart.host_input))
        return machine, write, output

    path = str(tmp_path / "debug.rec")
    machine, keys, recorded = machine_for(Recording, path)
    for key in b"abq":                     # each key some instructions after the last
        machine.run(max_instructions=5000)
        os.write(keys, bytes([key]))
    assert machine.run().status == 0
    machine.io.journal.close(0)

    machine, _, replayed = machine_for(Replay, path)
    debugger = Debugger(machine)
    on_key = _symbol(echo, "on_key")
    compressed = debugger.read_memory(0, on_key, 1)[0] & 3 != 3
    assert debugger.add_breakpoint(0, on_key, 2 if compressed else 4)   # as gdb chooses
    hits = []
    for _ in range(2):
        assert debugger.resume().kind == "breakpoint"
        hits.append((debugger.position, debugger.read_register(0, 10)))   # a0: the key
    assert [key for _, key in hits] == [ord("a"), ord("b")]
    assert debugger.reverse_continue().kind == "breakpoint"
    assert (debugger.position, debugger.read_register(0, 10)) == hits[0]
    assert debugger.reverse_step(0).kind == "step"
    assert debugger.position == hits[0][0] - 1
    assert debugger.resume().kind == "breakpoint"
    assert (debugger.position, debugger.read_register(0, 10)) == hits[0]
    assert debugger.resume().kind == "breakpoint"
    assert (debugger.position, debugger.read_register(0, 10)) == hits[1]
    debugger.remove_breakpoint(on_key)
    assert debugger.resume().kind == "exited"
    # The first key's line twice: shown, then shown again going forward over it.
    recorded = b"".join(recorded)
    first = recorded.splitlines(keepends=True)[1]
    assert b"".join(replayed) == recorded.replace(first, first * 2)


def test_every_input_gets_its_own_bytes_back_at_their_moments(echo, tmp_path, monkeypatch):
    """A record names inputs by the order they were added: a second one (as a
    network card's frames or a console port's bytes come in) is given its own
    bytes, and its end, at the moments they came in the recorded run, also
    after the guest rebooted (and its clock started again)."""
    from hartvm import HostIO, Machine, journal

    def run(journal_class, path, feed):
        output, seen = [], []
        machine = Machine(memory_size=16 << 20, io=HostIO(output=output.append))
        machine.load_kernel(echo)
        machine.io.journal = journal_class(path, machine)
        uart = machine.board.devices["uart0"]
        (keys, key_writer), (frames, frame_writer) = os.pipe(), os.pipe()
        machine.io.add_input(keys, uart.push_input, lambda: len(uart.host_input))
        machine.io.add_input(frames, lambda data: seen.append((machine.instructions, data)),
                             on_end=lambda: seen.append((machine.instructions, None)))
        feed(machine, key_writer, frame_writer)
        assert machine.run().status == 0
        return b"".join(output), seen

    def live(machine, keys, frames):
        for data in (b"frame 1", b"frame r"):     # (r: the guest reboots)
            machine.run(max_instructions=3000)
            os.write(frames, data)
            os.write(keys, data[-1:])
        machine.run(max_instructions=3000)
        os.close(frames)
        os.write(keys, b"q")

    path = str(tmp_path / "inputs.rec")
    recorded = run(journal.Recording, path, live)
    assert [data for _, data in recorded[1]] == [b"frame 1", b"frame r", None]
    assert recorded[0].count(b"ready\n") == 2           # it rebooted, then went on
    assert run(journal.Replay, path, lambda *_: None) == recorded
    monkeypatch.setattr(journal, "MAX_RECORD", os.path.getsize(path) - 1)
    with pytest.raises(HartvmError, match="MiB a replay reads"):
        run(journal.Replay, path, lambda *_: None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gdb_reverse_continues_over_replayed_input(toolchain, tmp_path):
    """``boot --replay FILE --gdb PORT``, driven by gdb-multiarch in batch mode:
    reverse-continue goes back over a replayed key, continue comes forward
    over it again, and after detach the replay runs to the recorded end."""
    assert GDB, "gdb-multiarch not found: install Debian's gdb-multiarch (make test does)"
    elf = os.path.join(_build_dir(), "echo-g.elf")
    subprocess.run([sys.executable, os.path.join(ROOT, "baremetal", "build.py"), "--debug",
                    "-o", elf, os.path.join(PROGRAMS, "echo.c")], check=True)
    record = str(tmp_path / "gdb.rec")
    recorded, _, status = _type_on_a_terminal(elf, record, b"mnq")
    assert status == 0
    port = _free_port()
    process = _boot(elf, "--replay", record, "--gdb", str(port), stdin=subprocess.DEVNULL)
    try:
        script = ["set pagination off", "set confirm off", f"target remote :{port}",
                  "break on_key", "continue", "print key", "continue", "print key",
                  "reverse-continue", "print key", "continue", "print key", "delete",
                  "detach"]
        arguments = [GDB, "-nx", "-batch"]
        for line in script:
            arguments += ["-ex", line]
        gdb = subprocess.run(arguments + [elf], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "HOME": ROOT})
        console, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = gdb.stdout + gdb.stderr
    values = [line.split(" = ", 1)[1] for line in text.splitlines()
              if line.startswith("$") and " = " in line]
    assert values == ["109", "110", "109", "110"], text          # m, n, m again, n again
    # The first key's line twice: it was shown, then shown again when the
    # program ran forward over it after going back.
    first = recorded.splitlines(keepends=True)[1]
    assert first.startswith(b"key 6d")
    assert (console, process.returncode) == (recorded.replace(first, first * 2), 0), \
        (console, text)
