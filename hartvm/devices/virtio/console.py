"""virtio-console with several ports (virtio 1.2 section 5.3, VIRTIO_CONSOLE_F_MULTIPORT).

Port 0 is a console port (the guest's /dev/hvc0); further ports are raw,
binary-safe character devices (/dev/vportNpM) with names the guest finds in
/sys/class/virtio-ports/*/name. The guest agent's channels are such ports.

Queues (5.3.2): port 0 receive/transmit are 0 and 1, the control queues 2
(device to driver) and 3 (driver to device), port n > 0 uses 2n + 2 and
2n + 3. Ports come up through control messages (5.3.6.2): the driver says
DEVICE_READY, the device announces each port with DEVICE_ADD, the driver
answers PORT_READY, the device names the port and says whether the host
side is open (PORT_OPEN). Opening or closing the device node in the guest
sends PORT_OPEN the other way.

Host-side open state is what Linux turns into end of file: a read of a
port whose host side is closed returns the bytes already delivered and
then 0, and a write blocks until the host side opens. So output ports stay
open, and an input port is closed (``Port.end_input``) once its bytes are
in the guest's buffers, and opened again when the guest closes it.

Bytes for a port wait in a queue of their own until the guest has posted
buffers (and, for a non-console port, until the guest has opened it,
because Linux drops data for a closed port). They are copied once, from the
host's chunk straight into the guest's buffer.

Linux posts one page per receive buffer and a write of up to 32 KiB per
transmit buffer (drivers/char/virtio_console.c: fill_queue, port_fops_write),
so a stream is thousands of buffers a second: the device offers
VIRTIO_F_EVENT_IDX (see queue.py), which spares the guest an interrupt per
buffer while it is still busy with earlier ones.
"""

import logging
import struct
from collections import deque

from ..base import saved
from .mmio import Backend
from .queue import F_EVENT_IDX

log = logging.getLogger("hartvm.virtio")

DEVICE_ID = 3
QUEUE_SIZE = 128
OUTPUT_ONLY_QUEUE = 2      # the receive queue of a port the host never writes to
F_SIZE = 1 << 0          # console sizes, sent as RESIZE control messages
F_MULTIPORT = 1 << 1
MAX_PORTS = 31
MAX_TRANSMIT = 1 << 20
MAX_CONTROL_QUEUE = 1024   # control messages waiting for driver buffers, at most
CONTROL_RECEIVE, CONTROL_TRANSMIT = 2, 3

# Control events (5.3.6.2.1).
DEVICE_READY, DEVICE_ADD, DEVICE_REMOVE, PORT_READY = 0, 1, 2, 3
CONSOLE_PORT, RESIZE, PORT_OPEN, PORT_NAME = 4, 5, 6, 7
CONTROL = struct.Struct("<IHH")


def receive_queue(port_id: int) -> int:
    return 0 if port_id == 0 else 2 * port_id + 2


class Port:
    """One port, seen from the host. ``output(bytes)`` gets what the guest writes;
    ``on_open(bool)`` is told when the guest opens or closes the port."""

    def __init__(self, console: "VirtioConsole", port_id: int, name: str | None, is_console: bool,
                 output, on_open=None, receive_queue: int = QUEUE_SIZE):
        self.console = console
        self.id = port_id
        self.receive_queue = receive_queue
        self.name = name
        self.is_console = is_console
        self.output = output
        self.on_open = on_open
        self.pending = deque()        # host bytes not yet in guest buffers, in chunks
        self._taken = 0               # bytes of pending[0] already delivered
        self._pending_bytes = 0
        self.host_open = True
        self.guest_ready = False
        self.guest_open = False
        self._end_after_pending = False

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def send(self, data: bytes) -> None:
        """Queue bytes for the guest; they go as soon as it has buffers for them."""
        if data:
            self.pending.append(bytes(data))
            self._pending_bytes += len(data)
            self.console.kick(receive_queue(self.id))

    def take(self, limit: int) -> memoryview:
        """Up to ``limit`` pending bytes from the first chunk, without copying them."""
        chunk = self.pending[0]
        piece = memoryview(chunk)[self._taken:self._taken + limit]
        self._taken += len(piece)
        self._pending_bytes -= len(piece)
        if self._taken == len(chunk):
            self.pending.popleft()
            self._taken = 0
        return piece

    def discard(self) -> None:
        """Drop the bytes not yet delivered."""
        self.pending.clear()
        self._taken = self._pending_bytes = 0

    def end_input(self) -> None:
        """Close the host side once the queued bytes are delivered (the guest reads EOF)."""
        self._end_after_pending = True
        self.console.kick(receive_queue(self.id))

    def open_host(self) -> None:
        self._end_after_pending = False
        if not self.host_open:
            self.host_open = True
            if self.guest_ready:
                self.console.control(self.id, PORT_OPEN, 1)

    def resize(self, rows: int, columns: int) -> None:
        """Tell the guest the terminal size of a console port (its hvc tty):
        struct virtio_console_resize is columns, then rows (5.3.6.2)."""
        self.console.control(self.id, RESIZE, 0, struct.pack("<HH", columns, rows))

    @property
    def deliverable(self) -> bool:
        return self.is_console or self.guest_open

    FLAGS = ("host_open", "guest_ready", "guest_open", "_end_after_pending")

    def save(self) -> dict:
        pending = list(self.pending)
        if pending:
            pending[0] = pending[0][self._taken:]
        return {"name": self.name or "", "is_console": self.is_console,
                "pending": pending, **{name: getattr(self, name) for name in self.FLAGS}}

    def restore(self, state: dict) -> None:
        if saved(state, "name", str) != (self.name or "") or \
                saved(state, "is_console", bool) != self.is_console:
            raise ValueError(f"port {self.id} is not the port {self.name!r} of this console")
        pending = saved(state, "pending", list)
        if not all(isinstance(chunk, bytes) for chunk in pending):
            raise ValueError(f"port {self.id}: pending data is not bytes")
        self.pending = deque(pending)
        self._taken = 0
        self._pending_bytes = sum(len(chunk) for chunk in pending)
        for name in self.FLAGS:
            setattr(self, name, saved(state, name, bool))

    def _maybe_end(self) -> None:
        if self._end_after_pending and not self.pending and self.guest_open and self.host_open:
            self._end_after_pending = False
            self.host_open = False
            self.console.control(self.id, PORT_OPEN, 0)


class VirtioConsole(Backend):
    device_id = DEVICE_ID
    features = F_SIZE | F_MULTIPORT | F_EVENT_IDX

    def __init__(self):
        self.ports: list[Port] = []
        self.multiport = False
        self._control_out = deque()      # control messages waiting for driver buffers

    def add_port(self, output, name: str | None = None, console: bool = False,
                 on_open=None, output_only: bool = False) -> Port:
        """Declare a port (before the device is attached). Port 0 is the console.
        ``output_only``: the host never writes to it, so its receive queue is
        small (Linux fills a port's receive queue with a page per entry)."""
        if self.transport is not None:
            raise ValueError("ports must be added before the device is attached")
        if len(self.ports) >= MAX_PORTS:
            raise ValueError(f"at most {MAX_PORTS} ports")
        port = Port(self, len(self.ports), name, console, output, on_open,
                    OUTPUT_ONLY_QUEUE if output_only else QUEUE_SIZE)
        self.ports.append(port)
        return port

    @property
    def queue_sizes(self) -> tuple[int, ...]:
        """Port 0's receive and transmit queues, the control queues, then each
        further port's (5.3.2)."""
        ports = self.ports or [None]
        sizes = [ports[0].receive_queue if ports[0] else QUEUE_SIZE, QUEUE_SIZE,
                 QUEUE_SIZE, QUEUE_SIZE]
        for port in ports[1:]:
            sizes += [port.receive_queue, QUEUE_SIZE]
        return tuple(sizes)

    def config(self) -> bytes:
        # cols, rows, max_nr_ports, emerg_wr (5.3.4)
        return struct.pack("<HHII", 0, 0, max(len(self.ports), 1), 0)

    def reset(self) -> None:
        """A driver reset: the ports must be announced again. Host bytes not yet
        delivered to the console port stay for the next driver."""
        self.multiport = False
        self._control_out.clear()
        for port in self.ports:
            port.guest_ready = port.guest_open = False
            if not port.is_console:
                port.discard()

    def save(self) -> dict:
        return {"multiport": self.multiport, "control_out": list(self._control_out),
                "ports": [port.save() for port in self.ports]}

    def restore(self, state: dict) -> None:
        ports = saved(state, "ports", list)
        if len(ports) != len(self.ports):
            raise ValueError(f"{len(ports)} console ports, expected {len(self.ports)}")
        for port, port_state in zip(self.ports, ports):
            port.restore(port_state)
        control_out = saved(state, "control_out", list)
        if not all(isinstance(message, bytes) and len(message) <= 4096
                   for message in control_out):
            raise ValueError("bad control messages")
        self._control_out = deque(control_out)
        self.multiport = saved(state, "multiport", bool)

    def kick(self, queue_index: int) -> None:
        if self.transport is not None:
            self.transport.kick(queue_index)

    def control(self, port_id: int, event: int, value: int, extra: bytes = b"") -> None:
        if len(self._control_out) >= MAX_CONTROL_QUEUE:
            # A driver that asks again and again but never takes the answers.
            log.info("virtio-console: control queue full, event %d dropped", event)
            return
        self._control_out.append(CONTROL.pack(port_id, event, value) + extra)
        self.kick(CONTROL_RECEIVE)

    def _port_of_queue(self, queue_index: int) -> tuple[Port | None, bool]:
        """(port, is its transmit queue) for a data queue."""
        port_id = 0 if queue_index < 2 else queue_index // 2 - 1
        if port_id >= len(self.ports) or (port_id > 0 and not self.multiport):
            return None, False
        return self.ports[port_id], bool(queue_index & 1)

    def process(self, queue_index, queue, ram) -> bool:
        if queue_index == CONTROL_TRANSMIT:
            return self._control_from_driver(queue, ram)
        if queue_index == CONTROL_RECEIVE:
            return self._control_to_driver(queue, ram)
        port, transmit = self._port_of_queue(queue_index)
        if port is None:
            return False
        if transmit:
            used = False
            for chain in queue.pending():
                port.output(chain.read(ram, limit=MAX_TRANSMIT))
                queue.put_used(chain.head, 0)
                used = True
            return used
        used = self._deliver(port, queue, ram) if port.deliverable else False
        port._maybe_end()
        return used

    def _deliver(self, port: Port, queue, ram) -> bool:
        """Fill posted receive buffers with pending host bytes (buffers the guest
        posted stay available in the ring until there is something to put in them)."""
        used = False
        while port.pending:
            chain = queue.next_chain()
            if chain is None:
                break
            room = chain.writable_size
            written = 0
            while port.pending and written < room:
                written += chain.write(ram, port.take(room - written), written)
            queue.put_used(chain.head, written)
            used = True
        return used

    def _control_to_driver(self, queue, ram) -> bool:
        used = False
        while self._control_out:
            chain = queue.next_chain()
            if chain is None:
                break
            queue.put_used(chain.head, chain.write(ram, self._control_out.popleft()))
            used = True
        return used

    def _control_from_driver(self, queue, ram) -> bool:
        used = False
        for chain in queue.pending():
            message = chain.read(ram, limit=4096)
            queue.put_used(chain.head, 0)
            used = True
            if len(message) >= CONTROL.size:
                self._driver_event(*CONTROL.unpack_from(message))
        return used

    def _driver_event(self, port_id: int, event: int, value: int) -> None:
        if event == DEVICE_READY:
            if value == 1:
                self.multiport = True
                for port in self.ports:
                    self.control(port.id, DEVICE_ADD, 0)
            return
        if port_id >= len(self.ports):
            log.info("virtio-console: event %d for unknown port %d", event, port_id)
            return
        port = self.ports[port_id]
        if event == PORT_READY and value == 1 and not port.guest_ready:
            port.guest_ready = True
            if port.is_console:
                self.control(port.id, CONSOLE_PORT, 1)
            if port.name:
                self.control(port.id, PORT_NAME, 1, port.name.encode())
            if port.host_open:
                self.control(port.id, PORT_OPEN, 1)
        elif event == PORT_OPEN:
            port.guest_open = bool(value)
            if not port.guest_open:
                port.discard()               # what the closed reader did not take is dropped
                port.open_host()             # ready for the next reader
            if port.on_open is not None:
                port.on_open(port.guest_open)
            self.kick(receive_queue(port.id))    # deliver what waited for the open
            port._maybe_end()
