"""What running a command in a guest gives back, and how it fails.

Shared by the in-process ``VM`` and the handle of a VM in its own process
(``RemoteVM``); importable without numpy. ``CommandIO`` is what makes both
``run`` methods feel like ``subprocess.run``: ``input`` as bytes or (in text
mode) str, output collected or streamed to callables, decoded in text mode,
``check=True`` raising ``CommandFailed``, and a timeout's partial output.
"""

import codecs
import subprocess
from dataclasses import dataclass

from ..errors import HartvmError
from ..errors import escape

DEFAULT_ENCODING = "utf-8"      # the guest has no locale to ask: its tools write UTF-8 or ASCII


class GuestError(HartvmError):
    """The guest failed: its kernel panicked, its agent died or it hung. Its
    message may go on with the guest's last console lines, each escaped and
    marked as the guest's (console_log.ConsoleLog.report)."""

    def __str__(self) -> str:
        return Exception.__str__(self)


# Both errors below derive from hartvm's base and from subprocess's own: ``except
# hartvm.HartvmError`` keeps catching every failure of hartvm (check=True raised a
# plain HartvmError before), and code written for subprocess (``except
# subprocess.CalledProcessError``, ``error.returncode``, ``error.output``) works
# unchanged on a guest. Neither base has instance layout or __init__ chaining of
# its own to clash: both are plain Exception subclasses.

class CommandTimeout(HartvmError, subprocess.TimeoutExpired):
    """A command did not finish in time. It was killed and the VM runs on, unless the
    guest did not let it go: then the VM is closed (the message says which).

    Like ``subprocess.TimeoutExpired``: ``cmd``, ``timeout``, and ``stdout`` and
    ``stderr`` as far as they came (bytes, or str in text mode; empty when they
    went to callables)."""

    def __init__(self, message: str, cmd=None, timeout: float | None = None,
                 output=b"", stderr=b""):
        subprocess.TimeoutExpired.__init__(self, cmd, timeout, output, stderr)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CommandFailed(HartvmError, subprocess.CalledProcessError):
    """``run(check=True)``: the command exited with a non-zero status. Like
    ``subprocess.CalledProcessError``: ``returncode``, ``cmd``, ``stdout`` (also
    ``output``) and ``stderr``, bytes or str as the run gave them."""

    def __str__(self) -> str:
        stderr = self.stderr
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
        lines = (stderr or "").strip().splitlines()
        # The guest wrote that text: one line of it, escaped, so that it cannot
        # pass for more lines of hartvm's own or drive a terminal.
        return (f"command {self.cmd!r} exited with status {self.returncode}"
                + (f": {escape(lines[-1][-300:])}" if lines else ""))


@dataclass
class CommandResult:
    """What ``VM.run`` returns, like ``subprocess.CompletedProcess``."""
    args: list
    returncode: int
    stdout: bytes | str
    stderr: bytes | str
    instructions: int = 0        # guest instructions executed while the command ran

    def check_returncode(self) -> None:
        """Raise ``CommandFailed`` if the status is not 0 (as CompletedProcess does)."""
        if self.returncode != 0:
            raise CommandFailed(self.returncode, self.args, self.stdout, self.stderr)


class CommandIO:
    """One command's input and output as ``run`` takes and gives them.

    Text mode (``text=True`` or an ``encoding``): ``input`` may be str, encoded
    with ``encoding`` (default UTF-8), and the output is decoded with it,
    ``errors`` as in ``bytes.decode`` (default "strict"); newlines are left as
    the guest wrote them. Output goes to the ``stdout``/``stderr`` callables as
    it comes (decoded incrementally in text mode, so a character split between
    two writes arrives whole), else it is collected for the result.
    """

    def __init__(self, args, input, text=False, encoding=None, errors=None,
                 stdout=None, stderr=None):
        self.args = args
        self.text = bool(text) or encoding is not None or errors is not None
        self.encoding = self.errors = None
        if self.text:
            if not isinstance(encoding or "", str) or not isinstance(errors or "", str):
                raise HartvmError("encoding and errors must be names (str)")
            self.encoding, self.errors = encoding or DEFAULT_ENCODING, errors or "strict"
            try:
                codecs.lookup(self.encoding)
                codecs.lookup_error(self.errors)
            except LookupError as error:
                raise HartvmError(str(error)) from None
            if isinstance(input, str):
                try:
                    input = input.encode(self.encoding, self.errors)
                except UnicodeError as error:
                    raise HartvmError(f"input cannot be encoded: {error}") from None
        elif isinstance(input, str):
            raise HartvmError("input must be bytes, not a str (or pass text=True)")
        self.input = input
        self.decode_error = None         # the first output that did not decode (strict)
        self.collected = ([], [])
        self._streams = []               # the sinks that decode as output comes
        self.stdout = self._sink(stdout, self.collected[0])
        self.stderr = self._sink(stderr, self.collected[1])

    def _sink(self, callback, collected):
        """A callable that takes the guest's bytes: the user's callable (given text in
        text mode) or the collector. It never raises: it runs inside the machine's
        loop, so a decoding error is noted and reported once the command ended."""
        if callback is None:
            return collected.append                 # decoded at the end, in one go
        if not callable(callback):
            return callback                         # refused by the run's own checks
        if not self.text:
            return callback
        decoder = codecs.getincrementaldecoder(self.encoding)(self.errors)

        def sink(data: bytes, final: bool = False) -> None:
            nonlocal decoder
            try:
                text = decoder.decode(data, final)
            except UnicodeDecodeError as error:
                self.decode_error = self.decode_error or error
                decoder = codecs.getincrementaldecoder(self.encoding)("replace")
                text = decoder.decode(data, final)
            if text:
                callback(text)
        self._streams.append(sink)
        return sink

    def _output(self, index: int, errors: str | None = None):
        data = b"".join(self.collected[index])
        if not self.text:
            return data
        try:
            return data.decode(self.encoding, errors or self.errors)
        except UnicodeDecodeError as error:
            raise HartvmError(f"the output of {self.args[0]!r} is not {self.encoding}: "
                              f"{error} (errors='replace' takes it as it is)") from None

    def result(self, status: int, instructions: int, check: bool) -> CommandResult:
        """The command's result (its streams decoded in text mode); with ``check``, a
        non-zero status raises ``CommandFailed``."""
        for sink in self._streams:
            sink(b"", final=True)                   # what an incomplete character left
        if self.decode_error is not None:
            raise HartvmError(f"the output of {self.args[0]!r} is not {self.encoding}: "
                              f"{self.decode_error} (errors='replace' takes it as it is)")
        result = CommandResult(self.args, status, self._output(0), self._output(1), instructions)
        if check:
            result.check_returncode()
        return result

    def timed_out(self, error: CommandTimeout, timeout) -> CommandTimeout:
        """``error`` with the command, its timeout and the output that came before
        it (decoded leniently in text mode: it may end in the middle of a character)."""
        return CommandTimeout(str(error), self.args, timeout,
                              self._output(0, "replace"), self._output(1, "replace"))


class Interrupted(Exception):
    """The host stopped the VM's run: its ``service`` callback asked to (the VM
    process was told to stop, or the client of a one-off run went away)."""
