"""Checks of the arguments ``VM`` and ``RemoteVM`` share, made before anything
is sent to the guest or to a VM process (issue 16): a wrong one is refused
with one line (``HartvmError``) and the VM stays as it was, ready for the
next command. Light (no numpy): the client uses it.
"""

import os
import re

from ..errors import HartvmError, quoted
from ..guest.command import command_script

MAX_FD = 1 << 31                 # a descriptor number is a C int
MAX_TERMINAL_SIDE = 0xFFFF       # struct virtio_console_resize holds u16 rows and columns
TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")      # a terminal type, as $TERM


def check_fd(fd, name: str) -> int:
    """``fd`` must be an open host file descriptor (the caller's: it is not closed)."""
    if type(fd) is not int or not 0 <= fd < MAX_FD:
        raise HartvmError(f"bad {name} {quoted(fd)}: an open file descriptor (an int)")
    try:
        os.fstat(fd)
    except OSError as error:
        raise HartvmError(f"bad {name} {fd}: {error.strerror}") from None
    return fd


def check_callable(value, name: str, what: str) -> None:
    if value is not None and not callable(value):
        raise HartvmError(f"{name} must be a callable that {what}, not a {type(value).__name__}")


def check_command_io(input, timeout, stdout, stderr, stdin_fd) -> None:
    """The arguments of ``run`` that say how to feed and wait for a command."""
    if input is not None and not isinstance(input, (bytes, bytearray, memoryview)):
        raise HartvmError(f"input must be bytes, not a {type(input).__name__}")
    check_timeout(timeout)
    check_callable(stdout, "stdout", "takes bytes")
    check_callable(stderr, "stderr", "takes bytes")
    if stdin_fd is not None:
        check_fd(stdin_fd, "stdin_fd")


def check_timeout(timeout) -> None:
    if timeout is not None and (type(timeout) not in (int, float) or not 0 < timeout < 1e9):
        raise HartvmError(f"bad timeout {quoted(timeout)}: a positive number of seconds")


def check_terminal(terminal_fd, output, rows, columns, term, input_filter, window) -> None:
    """The arguments of ``shell``: the host terminal and what goes between it and the guest's."""
    check_fd(terminal_fd, "terminal_fd")
    if not callable(output):
        raise HartvmError(f"output must be a callable that takes bytes, not a "
                          f"{type(output).__name__}")
    check_callable(input_filter, "input_filter", "takes and returns bytes")
    check_terminal_size(rows, columns)
    check_term(term)
    if window is not None:
        if not callable(getattr(window, "size", None)):
            raise HartvmError(f"window must be a frontends.console.WindowSize, not a "
                              f"{type(window).__name__}")
        check_fd(getattr(window, "fd", None), "window.fd")


def check_term(term) -> None:
    if not TERM.fullmatch(term if isinstance(term, str) else ""):
        raise HartvmError(f"bad terminal type {quoted(term)}")   # it goes into the shell's TERM


def check_terminal_size(rows, columns) -> None:
    for name, value in (("rows", rows), ("columns", columns)):
        if type(value) is not int or not 0 < value <= MAX_TERMINAL_SIDE:
            raise HartvmError(f"bad terminal {name} {quoted(value)}: 1 to {MAX_TERMINAL_SIDE}")


def command_words(args, env, cwd) -> tuple[list[str], dict[str, str], str | None]:
    """``args``, ``env`` and ``cwd`` checked as ``VM.run`` checks them, as text (for
    a request to a VM process): the same refusals in a client as in the VM."""
    command_script(args, env, cwd)
    text = _text
    return [text(arg) for arg in args], {text(k): text(v) for k, v in (env or {}).items()}, \
        None if cwd is None else text(cwd)


def _text(value) -> str:
    return os.fsdecode(os.fspath(value))


class CallerCode:
    """The caller's callables as a running command calls them (output sinks, an
    input filter, a window's size), from inside a device's work on a
    virtqueue: an exception of theirs must not leave that work half done, nor
    the guest agent busy with a command nobody waits for. The first one is
    kept, ``on_failure()`` is called (the VM kills the command), later calls
    do nothing, and the VM raises it once the command has ended; the VM is
    then ready for the next (as ``subprocess.run`` kills its child before it
    raises)."""

    def __init__(self):
        self.error: Exception | None = None
        self.on_failure = lambda: None

    def wrap(self, function, default=None):
        def call(*args):
            if self.error is None:
                try:
                    return function(*args)
                except Exception as error:      # noqa: BLE001 - the caller's, raised later
                    self.error = error
                    self.on_failure()
            return default
        return call

    def wrap_filter(self, input_filter):
        """An input filter (see ``checked_filter``)."""
        return None if input_filter is None else \
            self.wrap(checked_filter(input_filter), default=b"")


def checked_filter(input_filter):
    """``input_filter``, whose every result must be bytes."""
    def checked(data: bytes) -> bytes:
        result = input_filter(data)
        if not isinstance(result, (bytes, bytearray)):
            raise HartvmError(f"input_filter must return bytes, not a {type(result).__name__}")
        return bytes(result)
    return checked


def path_argument(value, name: str) -> str:
    """A host path the caller gave: a str or an os.PathLike of one (bytes, a
    number or an open descriptor are not taken for one)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise HartvmError(f"bad {name} {quoted(value)}: a path (str or os.PathLike)")
    if "\0" in value:
        raise HartvmError(f"bad {name} {quoted(value)}: a path has no NUL character")
    return value
