"""The host end of the guest agent (the guest end is agent.sh, started by /init).

The channel is five ports of one virtio-console device, each a raw,
binary-safe byte stream:

- ``org.hartvm.control``: lines. The agent says ``READY`` once it runs; the
  host sends ``RUN <number> <script>`` (the command's sequence number, and a
  shell script on one line: words with a newline are quoted as ``$'...'``,
  so no decoding process is needed); the agent answers ``EXIT <status>``
  when it has finished. One command at a time. ``SET 0 <script>`` runs a
  script in the agent's own shell before the next command is forked (a
  clone's new clock, hostname and pids, see ``VM.new_identity``); the
  agent answers ``SET-DONE``, which also proves a restored guest alive.
- ``org.hartvm.signal``: command numbers, one per line: the agent kills that
  command, if it still runs, with all its descendants (SIGKILL, status 137).
  A timeout or a client that went away ends the command and what it
  started, not the VM. A port of its own, read in the background, so that
  the command itself runs in the agent's foreground with the default signal
  actions; the number makes a late kill miss the next command.
- ``org.hartvm.stdin``: the command's stdin. The agent opens it for each
  command; the host's bytes are delivered once it is open, then the host
  closes its side and the command reads end of file.
- ``org.hartvm.stdout`` and ``org.hartvm.stderr``, and ``...stdout1`` and
  ``...stderr1`` to ``...3``: four output channels, each a pair of ports. The
  host takes a command's output from one channel only, until ``EXIT``:
  channel 0, which the agent keeps open, unless the agent says otherwise
  (``RUNNING <channel>``) before the command runs. What a command leaves
  running in the background keeps the channel it wrote to open (Linux lets
  a port be opened once at a time), so from then on the agent opens a free
  channel for each command and says which, and whatever the leftovers write
  later is dropped instead of landing in a later command's output. When all
  four are held the agent says ``HELD`` and runs the command with its output
  to /dev/null (so that a command to end the leftovers still runs), and the
  host says so on the command's stderr.

The guest's writes reach the host in order, so all of a command's output has
arrived when its ``EXIT`` line does. The status follows the shell: 127 for a
command that does not exist, 126 for one that cannot run, 128 + N for a
command killed by signal N.
"""

import functools

from ..devices.virtio.console import VirtioConsole
from ..errors import HartvmError

PORT_PREFIX = "org.hartvm."
OUTPUT_CHANNELS = 4
HELD_MESSAGE = (b"hartvm: this command's output is lost: processes that earlier commands left "
                b"running hold all %d output channels\n" % OUTPUT_CHANNELS)
MAX_CONTROL_LINE = 4096


# On an image's root the agent still runs in busybox's shell, which prefers its
# own applets to the programs of PATH (Debian builds busybox-static with
# FEATURE_SH_STANDALONE): `exec df` would run busybox's df, not coreutils'.
# An absolute path is never an applet, so the agent's run_program finds the
# command in PATH, as execvp(3) does, and execs it by its path.
IMAGE_RUNNER = b"run_program "


def _small_number(text: str) -> bool:
    """A status from the guest: digits, and few (int() refuses very long ones)."""
    return text.isdigit() and len(text) <= 10


class Agent:
    """The agent's ports on ``console`` and the state of the current command."""

    def __init__(self, console: VirtioConsole):
        self.control = console.add_port(self._control_output, name=PORT_PREFIX + "control")
        self.stdin = console.add_port(lambda data: None, name=PORT_PREFIX + "stdin")
        self.signal = console.add_port(lambda data: None, name=PORT_PREFIX + "signal")
        for channel in range(OUTPUT_CHANNELS):
            suffix = str(channel or "")
            for stream in ("stdout", "stderr"):
                console.add_port(functools.partial(self._output, channel, stream),
                                 name=PORT_PREFIX + stream + suffix, output_only=True)
        self.channel: int | None = None     # the running command's: 0 unless the agent says
        self.ready = False
        self.status: int | None = None      # the running command's exit status, once known
        self.error: str | None = None       # the agent said something it should not
        self.busy = False
        self.configured = False             # the last SET script has run
        self.number = 0                     # of the last command started
        self._line = bytearray()
        self._on_stdout = self._on_stderr = None

    def start(self, script: bytes, on_stdout, on_stderr) -> None:
        """Send a command; its output goes to the callables until ``status`` is set."""
        if not self.ready or self.busy:
            raise HartvmError("the guest agent is not ready for a command")
        if b"\n" in script:
            raise HartvmError("a script for the guest agent must be one line")
        self.busy, self.status, self.channel = True, None, 0
        self.number += 1
        self._on_stdout, self._on_stderr = on_stdout, on_stderr
        self.control.send(b"RUN %d " % self.number + script + b"\n")

    def configure(self, script: bytes) -> None:
        """Run a one-line script in the agent's own shell before the next command."""
        if b"\n" in script:
            raise HartvmError("a script for the guest agent must be one line")
        self.configured = False
        self.control.send(b"SET 0 " + script + b"\n")

    def kill(self) -> None:
        """Ask the agent to kill the running command (its ``EXIT`` follows). A kill
        that arrives before the command has started misses it: ask again."""
        if self.busy:
            self.signal.send(b"%d\n" % self.number)

    def drop_output(self) -> None:
        """What the running command writes from now on is dropped."""
        self._on_stdout = self._on_stderr = None

    def _output(self, channel: int, stream: str, data: bytes) -> None:
        """The running command's output; anything else (what earlier commands left
        running writes) is dropped."""
        if channel == self.channel and self.busy:
            sink = self._on_stdout if stream == "stdout" else self._on_stderr
            if sink is not None:
                sink(data)

    def _control_output(self, data: bytes) -> None:
        self._line += data
        while b"\n" in self._line:
            line, _, rest = bytes(self._line).partition(b"\n")
            self._line = bytearray(rest)
            self._message(line.decode("ascii", "replace").strip())
        if len(self._line) > MAX_CONTROL_LINE:
            self.error = "the guest agent sent an overlong line"
            self._line.clear()

    def _message(self, line: str) -> None:
        verb, _, argument = line.partition(" ")
        if verb == "READY":
            self.ready = True
        elif verb == "SET-DONE":
            self.configured = True
        elif verb == "RUNNING" and self.busy and argument.isdigit() and \
                int(argument) < OUTPUT_CHANNELS:
            self.channel = int(argument)
        elif verb == "HELD" and self.busy:
            self.channel = None
            if self._on_stderr is not None:
                self._on_stderr(HELD_MESSAGE)
        elif verb == "EXIT" and self.busy and _small_number(argument):
            self.status = int(argument)
            self.busy, self.channel = False, None
            self._on_stdout = self._on_stderr = None
        else:
            self.error = f"the guest agent said {line[:100]!r}"
