"""``HostIO``: the machine's one way in and out of the host.

Everything a running machine exchanges with the host goes through one
object, given to the machine when it is built:

- ``output(bytes)``: the serial console (UART, HTIF) and ``flush()``;
- inputs: host file descriptors, each with its own handler (``Input``), as
  Firecracker gives each device its own event handler: the UART's keyboard,
  a command's stdin for a virtio-console port, and later network frames and
  9P requests. An input is read only when its device can take more, so a
  guest that does not read leaves the bytes in the host's pipe;
- outputs: host descriptors a device writes without blocking (network
  frames to passt), each with what it holds unwritten (``Output``): the
  poll writes on when the descriptor can take more;
- wake-up descriptors: readable means "the front end wants the run's stop
  condition checked now" (a VM process's control socket);
- time: ``realtime`` says whether idle guest time passes at the host's pace
  (a person at a console) or is skipped (reproducible runs);
- ``trace``: a text stream for ``--trace``, one line per instruction;
- ``journal``: a record being written of what the host gives (``--record``),
  or one being given back instead of the host's input (``--replay``), see
  journal.py.

The machine polls it between rounds; nothing else reaches into the machine.
"""

import os
import select
import sys
import time
from dataclasses import dataclass
from typing import Callable

# Host bytes a device may hold unread before its fd is left alone. The machine
# polls once a round, and a guest reading a stream takes some 800 KiB in a
# round (a million instructions at about 1.2 a byte through virtio-console):
# a poll reads on while input is ready, up to this backlog, so that the
# guest finds its next buffers filled instead of waiting a round for them.
MAX_PENDING_INPUT = 2 << 20
READ_SIZE = 256 << 10


@dataclass(eq=False)
class Input:
    """A host descriptor whose bytes go to one device: ``deliver(bytes)``;
    ``backlog()`` is what the device holds unread; ``on_end()`` is called once
    at end of input; ``filter(bytes) -> bytes`` sees the bytes first (the
    console's Ctrl-A keys). ``number`` is its place in the order inputs were
    added to their ``HostIO``: a record names an input by it."""
    fd: int
    deliver: Callable[[bytes], None]
    backlog: Callable[[], int] = lambda: 0
    on_end: Callable[[], None] | None = None
    filter: Callable[[bytes], bytes] | None = None
    number: int = -1

    def read(self, journal=None) -> bool:
        """Move what is ready to the device; False at end of input."""
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return True          # nothing after all (a non-blocking socket)
        except (OSError, ValueError):
            data = b""
        if not data:
            if journal is not None:
                journal.ended(self.number)
            if self.on_end is not None:
                self.on_end()
            return False
        if self.filter is not None:
            data = self.filter(data)
        if journal is not None:
            journal.delivered(self.number, data)
        self.deliver(data)
        return True

    def drain(self, journal=None) -> bool:
        """``read`` while more input is ready and the device's backlog allows (a
        bounded number of times: a filter may keep the backlog empty); False at
        end of input."""
        for _ in range(MAX_PENDING_INPUT // READ_SIZE):
            if not self.read(journal):
                return False
            if self.backlog() >= MAX_PENDING_INPUT or not _ready(self.fd):
                break
        return True


@dataclass(eq=False)
class Output:
    """A host descriptor written without blocking: ``waiting()`` says whether
    bytes wait for it, ``flush()`` writes what it can take now."""
    fd: int
    waiting: Callable[[], bool]
    flush: Callable[[], None]


def _ready(fd: int) -> bool:
    """Can ``fd`` be read without waiting? (A closed one can: its read ends it.)"""
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class HostIO:
    def __init__(self, output=None, flush=None, realtime: bool = False, trace=None):
        if output is None:
            output, flush = sys.stdout.buffer.write, sys.stdout.buffer.flush
        self.output = output
        self.flush = flush or (lambda: None)
        self.realtime = realtime
        self.trace = trace
        self.inputs: list[Input] = []
        self.outputs: list[Output] = []
        self.wake_fds: list[int] = []
        self.deliveries = 0             # polls that moved host input to a device
        self.journal = None             # a journal.Recording or journal.Replay
        self._added = 0                 # inputs added so far (their numbers)

    def console_write(self, data: bytes) -> None:
        """What devices write the console with: ``output`` as it is now (a front
        end may change it while the machine lives, e.g. to mirror it to a log)."""
        self.output(data)

    def add_input(self, fd: int, deliver, backlog=None, on_end=None, filter=None) -> Input:
        source = Input(fd, deliver, on_end=on_end, filter=filter, number=self._added)
        self._added += 1
        if backlog is not None:
            source.backlog = backlog
        self.inputs.append(source)
        return source

    def remove_input(self, source: Input) -> None:
        if source in self.inputs:
            self.inputs.remove(source)

    def add_output(self, fd: int, waiting, flush) -> Output:
        sink = Output(fd, waiting, flush)
        self.outputs.append(sink)
        return sink

    def remove_output(self, sink: Output) -> None:
        if sink in self.outputs:
            self.outputs.remove(sink)

    @property
    def replaying(self) -> bool:
        """Does a record stand in for the host's input?"""
        return self.journal is not None and self.journal.replaying

    def next_event(self) -> tuple[int, int | None] | None:
        """While replaying, the (position, cycle) at which the record's next input
        comes (journal.py; the cycle is None while a reboot is to come first);
        None otherwise, and after the last one."""
        return self.journal.next_key() if self.replaying else None

    @property
    def waits_for_host(self) -> bool:
        """Can anything from the host still arrive?"""
        return bool(self.inputs or self.wake_fds or any(sink.waiting() for sink in self.outputs))

    def poll(self, timeout: float = 0.0) -> bool:
        """Wait up to ``timeout`` seconds for host input (moved to its device), a
        wake-up, or room in an output that has bytes waiting; True if any came.
        Sleeps the timeout when there is none to wait for. While replaying, the
        record's input for this moment is delivered instead of the host's."""
        journal, replayed = self.journal, False
        if self.replaying:
            replayed = journal.deliver_due(self)
            self.deliveries += replayed
            timeout = 0 if replayed else timeout
        elif journal is not None:
            journal.tick()
        wanted = {} if self.replaying else {
            source.fd: source for source in self.inputs if source.backlog() < MAX_PENDING_INPUT}
        writers = {sink.fd: sink for sink in self.outputs if sink.waiting()}
        fds = list(self.wake_fds) + list(wanted)
        if not fds and not writers:
            if timeout > 0:
                time.sleep(timeout)
            return replayed
        try:
            ready, writable, _ = select.select(fds, list(writers), [], timeout)
        except (OSError, ValueError):
            ready, writable = list(wanted), list(writers)   # a closed one: its I/O ends it
        for fd in writable:
            writers[fd].flush()
        for fd in ready:
            source = wanted.get(fd)
            if source is not None:
                self.deliveries += 1
                if not source.drain(journal):
                    self.remove_input(source)
        return bool(ready or writable or replayed)

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()

    @staticmethod
    def wall_clock_ns() -> int:
        return time.time_ns()
