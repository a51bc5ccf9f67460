"""Terminals: ``hartvm shell NAME`` in a running VM, ``exec -t``, the window's size
followed, and Ctrl-A X's own exit status, each on a pseudo-terminal."""

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from conftest import ROOT
from hartvm import exit_status

HARTVM = [sys.executable, "-m", "hartvm"]


class Terminal:
    """``hartvm ARGS`` on a pseudo-terminal of ROWS x COLUMNS."""

    def __init__(self, args, rows=30, columns=100):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            self.resize_fd(0, rows, columns)
            os.chdir(ROOT)
            os.execv(sys.executable, HARTVM + args)
        self.seen = b""

    @staticmethod
    def resize_fd(fd, rows, columns):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def resize(self, rows, columns):
        """As a terminal emulator does: the kernel signals the foreground (SIGWINCH)."""
        self.resize_fd(self.fd, rows, columns)

    def read_until(self, token: bytes, seconds: float = 120) -> bool:
        end = time.monotonic() + seconds
        while token not in self.seen and time.monotonic() < end:
            if select.select([self.fd], [], [], 1.0)[0]:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    break
        return token in self.seen

    def type(self, text: bytes):
        os.write(self.fd, text)

    def status(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        return os.WEXITSTATUS(status)

    def close(self):
        if self.pid is not None:
            try:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)


@pytest.fixture(scope="module")
def running(state_dir):
    subprocess.run(HARTVM + ["up", "--name", "term"], check=True, cwd=ROOT, timeout=300,
                   capture_output=True)
    yield "term"


def test_shell_in_a_running_vm_follows_the_window_and_leaves_the_vm_running(running):
    terminal = Terminal(["shell", running], rows=30, columns=100)
    try:
        assert terminal.read_until(b"# "), terminal.seen[-2000:]
        terminal.type(b"echo $((6 * 7)); stty size; echo made > /root/from-shell\r")
        assert terminal.read_until(b"30 100"), terminal.seen[-2000:]
        assert b"42" in terminal.seen
        terminal.resize(50, 132)
        time.sleep(1)
        terminal.type(b"stty size\r")
        assert terminal.read_until(b"50 132"), terminal.seen[-2000:]
        terminal.type(b"exit 3\r")
        assert terminal.status() == 3
    finally:
        terminal.close()
    after = subprocess.run(HARTVM + ["exec", running, "--", "cat", "/root/from-shell"],
                           capture_output=True, text=True, timeout=120)
    assert after.stdout == "made\n"


def test_exec_tty_runs_the_command_on_a_terminal(running):
    terminal = Terminal(["exec", "-t", "-e", "WHO=tty", running, "--", "sh", "-c",
                         "tty; stty size; echo $WHO $TERM; exit 4"], rows=33, columns=77)
    try:
        assert terminal.read_until(b"tty "), terminal.seen[-2000:]
        assert b"/dev/hvc0" in terminal.seen and b"33 77" in terminal.seen
        assert terminal.status() == 4
    finally:
        terminal.close()


def test_exec_without_tty_has_no_terminal(running):
    result = subprocess.run(HARTVM + ["exec", running, "--", "tty"], capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip() == "not a tty"


def test_ctrl_a_x_quits_with_its_own_status(running):
    terminal = Terminal(["shell", running])
    try:
        assert terminal.read_until(b"# "), terminal.seen[-2000:]
        terminal.type(b"\x01x")
        assert terminal.status() == exit_status.QUIT
        assert b"quit (Ctrl-A X)" in terminal.seen or terminal.read_until(b"quit", 5)
    finally:
        terminal.close()
    # The VM runs on: the shell that was quit is gone, the next command runs.
    after = subprocess.run(HARTVM + ["exec", running, "--", "echo", "still here"],
                           capture_output=True, text=True, timeout=120)
    assert after.stdout == "still here\n"


def test_a_hostile_terminal_client_breaks_only_its_own_input():
    from hartvm.vmm import protocol
    resized = []
    frames = protocol.TerminalInput(lambda rows, columns: resized.append((rows, columns)))
    good = protocol.frame(protocol.KEYS, b"ls\r") + \
        protocol.frame(protocol.RESIZE, b'{"rows": 40, "columns": 120}')
    assert frames.filter(good[:3]) == b"" and frames.filter(good[3:]) == b"ls\r"
    assert resized == [(40, 120)]
    for bad in (b'{"rows": 0, "columns": 80}', b'{"rows": 1e9}', b"[]", b"\xff",
                b'{"rows": true, "columns": 80}'):
        assert frames.filter(protocol.frame(protocol.RESIZE, bad)) == b""
    assert resized == [(40, 120)]
    assert frames.filter(protocol.frame(b"?", b"x") + protocol.frame(protocol.KEYS, b"y")) == b""
    assert frames.broken and frames.filter(protocol.frame(protocol.KEYS, b"z")) == b""


def test_shell_input_that_ends_gets_ctrl_d_then_a_hang_up(running):
    # `hartvm shell NAME < script`: the keys run, then the end-of-file key ends the
    # shell (or, if it went unread, the session is hung up: 137); never a hang.
    started = time.monotonic()
    typed = subprocess.run(HARTVM + ["shell", running], input=b"echo typed-$((6 * 7))\n",
                           capture_output=True, timeout=120)
    assert b"typed-42" in typed.stdout, typed
    assert typed.returncode in (0, 137), typed
    # A session that never reads its end of input is hung up 3 s after it.
    hung = subprocess.run(HARTVM + ["shell", running], input=b"sleep 1000\n",
                          capture_output=True, timeout=120)
    assert hung.returncode == 137, hung
    assert time.monotonic() - started < 60
    after = subprocess.run(HARTVM + ["exec", running, "--", "echo", "still here"],
                           capture_output=True, text=True, timeout=120)
    assert after.stdout == "still here\n"
