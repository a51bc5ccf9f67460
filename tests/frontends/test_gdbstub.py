"""The GDB stub (``hartvm boot --gdb PORT``), driven by Debian's gdb-multiarch in
batch mode on a bare-metal C program with debug info: a conditional
breakpoint, variables, a watchpoint on the right store, stepi and
reverse-stepi around it, reverse-continue to earlier breakpoint hits with
the earlier values, registers and CSRs, monitor commands, threads, and the
program running to its end after detach. Then hostile clients."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import PROGRAMS, ROOT, _build_dir
from hartvm.cpu.layout import MISA_VALUE

GDB = shutil.which("gdb-multiarch")


@pytest.fixture(scope="module")
def debuggee(toolchain):
    assert GDB, "gdb-multiarch not found: install Debian's gdb-multiarch (make test does)"
    output = os.path.join(_build_dir(), "debuggee-g.elf")
    subprocess.run([sys.executable, os.path.join(ROOT, "baremetal", "build.py"), "--debug",
                    "-o", output, os.path.join(PROGRAMS, "debuggee.c")], check=True)
    return output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session(elf: str, commands: list[str], *extra: str) -> tuple[str, bytes, int]:
    """gdb's output for ``commands`` against a fresh ``boot --gdb``; the VM's
    console output and exit status."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hartvm", "boot", "--bios", "none", "--kernel", elf,
         "--memory", "16M", "--gdb", str(port), *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        script = ["set pagination off", "set confirm off",
                  f"target remote :{port}", *commands]
        arguments = [GDB, "-nx", "-batch"]
        for line in script:
            arguments += ["-ex", line]
        # gdb retries the connection while hartvm starts (remotetimeout).
        gdb = subprocess.run(arguments + ["-ex", "detach", elf], capture_output=True, text=True,
                             timeout=180, env={**os.environ, "HOME": ROOT})
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return gdb.stdout + gdb.stderr, output, process.returncode


def _connect_when_listening(port: int, process) -> socket.socket:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
    raise AssertionError("the stub never listened")


def _values(text: str) -> list[str]:
    """What gdb's ``print`` commands showed, in order ("$1 = 3" -> "3")."""
    return [line.split(" = ", 1)[1] for line in text.splitlines()
            if line.startswith("$") and " = " in line]


def test_breakpoints_watchpoints_and_reverse_execution(debuggee):
    text, console, status = _session(debuggee, [
        "break add_square if i == 3", "continue", "print i", "print total",
        "watch total", "continue",            # fires on the store of total += 9
        "print total", "reverse-stepi", "print total", "stepi", "print total",
        "delete 2", "break add_square",
        "reverse-continue", "print i", "print total",   # back to this call's start
        "reverse-continue", "print i", "print total",   # and to the call before
        "p/x $pc", "p $priv", "p/x $misa",
        "info threads", "monitor info",
    ])
    breakpoint = text.split("Breakpoint 1 at ", 1)[1].split(":", 1)[0]
    assert _values(text) == ["3", "5", "14", "5", "14", "3", "5", "2", "1", breakpoint, "3",
                             hex(MISA_VALUE & (2**64 - 1))], text
    assert "Old value = 5" in text and "New value = 14" in text, text
    assert "Thread 1" in text and "harts: 1" in text, text
    # Detached, the program runs on to its end, as it would have.
    assert console == b"total 140\n" and status == 0, (console, status, text)


def test_read_and_access_watchpoints_and_reverse_to_a_write(debuggee):
    text, console, status = _session(debuggee, [
        "break add_square if i == 3", "continue", "delete",
        "rwatch total", "continue", "print total",        # total += ...: loads 5
        "delete", "awatch squares[4]", "continue",        # the store of 16, in call 4
        "continue", "print i",                            # and its load
        "delete", "watch total", "reverse-continue",      # back to call 3's store
        "print i", "print total",
    ])
    assert "Hardware read watchpoint 2: total\n\nValue = 5" in text, text
    assert "Old value = 0\nNew value = 16" in text and "Value = 16" in text, text
    # Going back, GDB shows the later value first: the store of 14 is undone.
    assert "Old value = 14\nNew value = 5" in text, text
    assert _values(text) == ["5", "4", "3", "5"], text
    assert console == b"total 140\n" and status == 0, (console, status, text)


def test_monitor_savevm_and_loadvm_go_back_to_a_named_point(debuggee):
    # GDB keeps what it read: after loadvm it must forget it (as with QEMU's loadvm).
    forget = ["maintenance flush register-cache", "maintenance flush dcache"]
    text, console, status = _session(debuggee, [
        "break add_square", "continue", "continue", "continue", "print i",
        "monitor savevm third", "continue", "continue", "print i",
        "monitor loadvm third", *forget, "print i", "print total", "p/x $pc",
        "reverse-stepi", "p/x $pc", "monitor loadvm fourth", "monitor help",
    ])
    values = _values(text)
    assert values[:4] == ["2", "4", "2", "1"], text
    assert 0 < int(values[4], 16) - int(values[5], 16) <= 4, text    # history goes on
    assert "saved third at instruction" in text and "loaded third: instruction" in text, text
    assert "no snapshot named fourth" in text and "savevm NAME and loadvm NAME" in text, text
    assert "snapshot PATH" not in text, text          # a VM's only
    assert console == b"total 140\n" and status == 0, (console, status, text)


def test_reverse_continue_with_two_harts(toolchain):
    output = os.path.join(_build_dir(), "debuggee_smp-g.elf")
    subprocess.run([sys.executable, os.path.join(ROOT, "baremetal", "build.py"), "--debug",
                    "-o", output, os.path.join(PROGRAMS, "debuggee_smp.c")], check=True)
    text, console, status = _session(output, [
        "break work", "continue", "continue", "continue", "print i",
        "reverse-continue", "print i", "print hart", "info threads", "delete",
    ], "--smp", "2")
    assert _values(text) == ["2", "1", "0"], text
    assert "Thread 2 (hart 1" in text, text
    expected = sum(range(200000))
    assert console == f"{expected} {expected} {3 * expected}\n".encode() and status == 0


def test_every_hart_is_a_thread_and_registers_can_be_written(debuggee):
    text, console, status = _session(debuggee, [
        "info threads", "break add_square", "continue", "set var $a0 = 6", "set var i = 6",
        "p $a0", "set var total = 100", "delete", "continue",
    ], "--smp", "2")
    assert "Thread 1" in text and "Thread 2" in text, text
    assert _values(text) == ["6"], text
    # add_square(6) instead of (0): 36, then 1..7 (140 - 0): 100 + 36 + 140 = 276.
    assert console == b"total 276\n" and status == 0, (console, text)


def test_hostile_clients_break_only_their_session(debuggee):
    """Garbage, bad checksums, huge and malformed packets, then a disconnect: the
    stub answers what it can and the machine runs on to its end."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hartvm", "boot", "--bios", "none", "--kernel", debuggee,
         "--memory", "16M", "--gdb", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        sock = _connect_when_listening(port, process)
        packets = [b"garbage", b"$g#00", b"$m0,ffffffffffff#00", b"$mzz#00", b"$p99999#00",
                   b"$Z0,1,4#00", b"$Hgff#00", b"$qXfer:features:read:target.xml:x#00",
                   b"$M80000000,4:zz#00", b"$qRcmd,zz#00", b"$" + b"a" * 100000 + b"#00",
                   b"$bs#00"]
        for packet in packets:
            sock.sendall(packet)
        time.sleep(1)
        sock.close()
        console, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert console == b"total 140\n" and process.returncode == 0


def test_a_port_in_use_is_one_line(debuggee):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "hartvm", "boot", "--bios", "none", "--kernel", debuggee,
             "--gdb", str(port)], capture_output=True, text=True, timeout=120, cwd=ROOT,
            stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"hartvm: --gdb {port}: ")


def test_gdb_attaches_to_a_running_linux_vm_and_detaches(state_dir, tmp_path):
    """``hartvm up --gdb PORT``: gdb attaches at any time (the VM stops), lists every
    hart, stops at a kernel function's address (from /proc/kallsyms: Debian's
    System.map is a stub, the real one is in the -dbg package), and on detach
    the VM runs on."""
    assert GDB, "gdb-multiarch not found: install Debian's gdb-multiarch (make test does)"
    from hartvm import VM, RemoteVM
    port = _free_port()
    subprocess.run([sys.executable, "-m", "hartvm", "up", "--name", "dbg", "--smp", "2",
                    "--gdb", str(port)], check=True, cwd=ROOT, timeout=300, capture_output=True)
    vm = RemoteVM("dbg")
    try:
        symbols = vm.run(["grep", " __riscv_sys_clock_nanosleep$", "/proc/kallsyms"]).stdout
        address = "0x" + symbols.split()[0].decode()
        # Something that calls it again and again while gdb waits (its output
        # goes nowhere: it outlives the command).
        vm.run(["sh", "-c", "while :; do sleep 0.2; done >/dev/null 2>&1 &"], check=True)
        script = ["set pagination off", "set confirm off", f"target remote :{port}",
                  "info threads", f"break *{address}", "continue", "p/x $pc", "p $priv",
                  f"monitor snapshot {tmp_path / 'stopped'}", "detach"]
        arguments = [GDB, "-nx", "-batch"]
        for line in script:
            arguments += ["-ex", line]
        gdb = subprocess.run(arguments, capture_output=True, text=True, timeout=180)
        text = gdb.stdout + gdb.stderr
        assert "Thread 1" in text and "Thread 2" in text, text
        assert _values(text) == [address, "1"], text       # there, in S-mode
        assert vm.run(["echo", "runs on"]).stdout == b"runs on\n"
    finally:
        vm.stop()
    # The snapshot gdb took, stopped in the kernel, restores and runs commands.
    assert "snapshot written to" in text, text
    restored = VM.restore(tmp_path / "stopped")
    try:
        assert restored.run(["echo", "restored"]).stdout == b"restored\n"
    finally:
        restored.close()


def test_stepping_to_the_guest_s_end_reports_its_exit(debuggee):
    """stepi over the instruction that ends the guest says so (gdb's W packet)."""
    from hartvm import HostIO, Machine
    from hartvm.vmm.debugger import Debugger
    output = []
    machine = Machine(memory_size=16 << 20, io=HostIO(output=output.append))
    machine.load_kernel(debuggee)
    debugger = Debugger(machine)
    for _ in range(200_000):
        event = debugger.step(0)
        if event.kind != "step":
            break
    assert (event.kind, event.status) == ("exited", 0)
    assert b"".join(output) == b"total 140\n"
