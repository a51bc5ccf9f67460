"""virtio-console with one port (virtio 1.2 section 5.3): the guest's /dev/hvc0.

Queue 0 (receiveq) carries host-to-guest bytes, queue 1 (transmitq)
guest-to-host bytes. Bytes from the host wait in a queue of their own until
the guest has posted buffers; ``push`` hands them over as soon as it can.
This is the channel of the guest agent.
"""

from collections import deque

from .mmio import Backend

DEVICE_ID = 3
QUEUE_SIZE = 128
RECEIVE, TRANSMIT = 0, 1
MAX_TRANSMIT = 1 << 20


class Console(Backend):
    device_id = DEVICE_ID
    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE)

    def __init__(self, output):
        self._output = output              # callable(bytes): what the guest wrote
        self.pending = deque()             # host bytes not yet delivered, in chunks

    def config(self) -> bytes:
        return bytes(8)                    # cols, rows, max_nr_ports: unused without features

    def push(self, data: bytes) -> None:
        if data:
            self.pending.append(bytes(data))

    def reset(self) -> None:
        pass                               # undelivered host bytes stay for the next driver

    def process(self, queue_index, queue, ram) -> bool:
        if queue_index == TRANSMIT:
            used = False
            for chain in queue.pending():
                self._output(chain.read(ram, limit=MAX_TRANSMIT))
                queue.put_used(chain.head, 0)
                used = True
            return used
        return self._deliver(queue, ram)

    def _deliver(self, queue, ram) -> bool:
        """Fill posted receive buffers with pending host bytes (buffers the guest
        posted stay available in the ring until there is something to put in them)."""
        used = False
        while self.pending:
            chain = queue.next_chain()
            if chain is None:
                break
            room = chain.writable_size
            data = bytearray()
            while self.pending and len(data) < room:
                chunk = self.pending.popleft()
                take = room - len(data)
                data += chunk[:take]
                if len(chunk) > take:
                    self.pending.appendleft(chunk[take:])
            queue.put_used(chain.head, chain.write(ram, bytes(data)))
            used = True
        return used
