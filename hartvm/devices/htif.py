"""HTIF: the host-target interface of the RISC-V test suites (``tohost``/``fromhost``).

A program that defines the ``tohost`` symbol talks to the host by storing
a 64-bit command there (the word is in RAM; the run loop exits on a store
to it). Command layout: device in bits 63:56, command in 55:48, payload
below. Device 0 command 0: payload bit 0 set means exit with status
payload >> 1; otherwise the payload is the address of a "magic memory"
block of eight 64-bit words holding a system call (only ``write``, number
64, is served, as the riscv-tests benchmarks use for printf). Device 1
command 1 prints the low byte of the payload. Completion is signalled by
clearing ``tohost`` and writing ``fromhost``.
"""

from ..memory import GuestMemoryError

SYS_WRITE = 64
ENOSYS = 38
EFAULT = 14
MAX_WRITE = 1 << 20


class HTIF:
    def __init__(self, ram, tohost: int, fromhost: int | None, output, on_exit):
        self.ram = ram
        self.tohost = tohost
        self.fromhost = fromhost
        self._output = output
        self._on_exit = on_exit

    def handle(self) -> None:
        """Serve the command the guest just stored to ``tohost``."""
        command = self.ram.read_u64(self.tohost)
        if command == 0:
            return
        device = command >> 56
        cmd = (command >> 48) & 0xFF
        payload = command & ((1 << 48) - 1)
        self.ram.write_u64(self.tohost, 0)
        if device == 0 and cmd == 0:
            if payload & 1:
                self._on_exit(payload >> 1)
                return
            self._syscall(payload)
            self._reply(1)
        elif device == 1 and cmd == 1:
            self._output(bytes([payload & 0xFF]))
            self._reply((1 << 56) | (1 << 48))

    def _syscall(self, block: int) -> None:
        try:
            number, fd, buffer, length = (self.ram.read_u64(block + 8 * i) for i in range(4))
            if number != SYS_WRITE:
                result = -ENOSYS
            elif fd in (1, 2) and length <= MAX_WRITE:
                self._output(self.ram.read(buffer, length))
                result = length
            else:
                result = -EFAULT
            self.ram.write_u64(block, result)
        except GuestMemoryError:
            pass  # a block outside RAM gets no answer, as on real HTIF hosts

    def _reply(self, value: int) -> None:
        if self.fromhost is not None and self.ram.contains(self.fromhost, 8):
            self.ram.write_u64(self.fromhost, value)
