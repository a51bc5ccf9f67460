"""A 16550A UART with register shift 0, as on QEMU's virt board.

Transmission is instantaneous: a byte written to THR goes straight to the
``output`` callable. Bytes from the host (``push_input``) wait in a queue
of their own, which a FIFO reset does not empty; bytes sent to itself in
loopback mode go through a 16-byte FIFO that can overrun, like the chip's.
Registers and IIR priorities are as in the PC16550D data sheet.

The interrupt line is driven as QEMU's serial.c drives it: its
serial_update_irq raises the line (``set_irq(True)``) whenever an
interrupt is due and lowers it otherwise, and it is called on certain
events only, not whenever the state changes: a byte received, a THR write,
an RBR read, an IIR read that names THRE, an LSR read that clears an
overrun, an IER write that changes IER, any FCR write. The PLIC latches a
raise as a request (plic.py), so which accesses signal decides how many
interrupts a driver sees: one that leaves THRE standing and reads only LSR
gets one interrupt, one that also reads RBR gets one per read.
"""

from collections import deque

from .base import Device, saved

RBR_THR = 0
IER = 1
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

IER_RDA = 0x01          # received data available
IER_THRE = 0x02         # transmitter holding register empty
LCR_DLAB = 0x80
LSR_DR = 0x01
LSR_OE = 0x02
FIFO_SIZE = 16
LSR_THRE = 0x20
LSR_TEMT = 0x40
IIR_NONE = 0x01
IIR_THRE = 0x02
IIR_RDA = 0x04
IIR_FIFO = 0xC0
MCR_LOOP = 0x10
MSR_LOOP_BITS = 0xB0    # DCD, DSR, CTS as seen with loopback of OUT2, DTR, RTS
CLOCK_HZ = 3686400      # the clock-frequency QEMU's virt.c gives its serial node


class UART16550(Device):
    access_sizes = frozenset({1, 2, 4, 8})

    def __init__(self, output, set_irq=None):
        super().__init__()
        self._output = output
        self._set_irq = set_irq
        self.host_input = deque()     # bytes from the host, waiting to be read
        self.reset()

    def reset(self) -> None:
        """Power-on register values; host input not yet read is kept."""
        self.rx = deque()             # loopback FIFO (16 bytes, as the chip's)
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.scr = 0
        self.fcr = 0
        self.divisor = 1
        self.thre_pending = False     # QEMU's thr_ipending
        self.overrun = False
        if self._set_irq is not None:
            self._set_irq(False)      # serial_reset: qemu_irq_lower

    # --- host side --------------------------------------------------------
    def push_input(self, data: bytes) -> None:
        """Bytes typed on the host (serial_receive1 signals the line)."""
        if data:
            self.host_input.extend(data)
            self._update_irq()

    # --- registers ----------------------------------------------------------
    def read(self, offset, size):
        if self.lcr & LCR_DLAB and offset in (RBR_THR, IER):
            return (self.divisor >> (8 * offset)) & 0xFF
        if offset == RBR_THR:
            if self.rx:
                value = self.rx.popleft()
            elif self.host_input:
                value = self.host_input.popleft()
            else:
                value = 0
            self._update_irq()        # every RBR read signals, data or not
            return value
        if offset == IER:
            return self.ier
        if offset == IIR_FCR:
            iir = self._iir()
            if iir == IIR_THRE:
                self.thre_pending = False  # reading IIR clears the THRE interrupt
                self._update_irq()
            return iir | (IIR_FIFO if self.fcr & 1 else 0)
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            ready = LSR_DR if self.rx or self.host_input else 0
            value = LSR_THRE | LSR_TEMT | ready | (LSR_OE if self.overrun else 0)
            if self.overrun:
                self.overrun = False  # OE clears when LSR is read, and only then
                self._update_irq()    # does an LSR read signal
            return value
        if offset == MSR:
            return MSR_LOOP_BITS
        if offset == SCR:
            return self.scr
        return self.unknown("read", offset)

    def write(self, offset, size, value):
        value &= 0xFF
        if self.lcr & LCR_DLAB and offset in (RBR_THR, IER):
            shift = 8 * offset
            self.divisor = (self.divisor & ~(0xFF << shift)) | (value << shift)
            return
        if offset == RBR_THR:
            if self.mcr & MCR_LOOP:
                if len(self.rx) < FIFO_SIZE:
                    self.rx.append(value)
                else:
                    self.overrun = True   # the guest loses the byte, as on a real 16550
            else:
                self._output(bytes([value]))
            self.thre_pending = True  # sent at once: THR is empty again
            self._update_irq()
        elif offset == IER:
            changed = (self.ier ^ value) & 0x0F
            self.ier = value & 0x0F
            # THRE is sampled again when IER_THRE changes (and LSR.THRE is
            # always set here), as serial_ioport_write does; and only a change
            # signals the line.
            if changed & IER_THRE:
                self.thre_pending = bool(self.ier & IER_THRE)
            if changed:
                self._update_irq()
        elif offset == IIR_FCR:
            # A change of the FIFO enable bit resets both FIFOs, as QEMU's
            # serial_ioport_write does; a transmit-FIFO reset leaves THR empty
            # and THRE due. A receive-FIFO reset (bit 1) drops loopback bytes
            # but keeps what the host typed: drivers reset the FIFO when they
            # start, and input typed (or piped) before then should still reach
            # the guest. Every FCR write signals the line.
            if (value ^ self.fcr) & 0x01:
                value |= 0x06
            if value & 0x02:
                self.rx.clear()
            if value & 0x04:
                self.thre_pending = True
            self.fcr = value & 0xC9
            self._update_irq()
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & 0x1F
        elif offset == SCR:
            self.scr = value
        elif offset not in (LSR, MSR):
            self.unknown("write", offset)

    def _iir(self):
        if self.ier & IER_RDA and (self.rx or self.host_input):
            return IIR_RDA
        if self.ier & IER_THRE and self.thre_pending:
            return IIR_THRE
        return IIR_NONE

    def _update_irq(self):
        """serial_update_irq: raise the line if an interrupt is due, else lower it."""
        if self._set_irq is not None:
            self._set_irq(self._iir() != IIR_NONE)

    def fdt_node(self, tree, region) -> None:
        """The serial node, and the console Linux and OpenSBI write to."""
        node = tree.device("serial", region, "ns16550a")
        node.set("clock-frequency", CLOCK_HZ)
        tree.chosen.set("stdout-path", f"/soc/{node.name}")

    def save(self):
        return {"rx": bytes(self.rx), "host_input": bytes(self.host_input), "ier": self.ier, "lcr": self.lcr, "mcr": self.mcr,
                "scr": self.scr, "fcr": self.fcr, "divisor": self.divisor,
                "thre_pending": int(self.thre_pending), "overrun": int(self.overrun)}

    def restore(self, state):
        self.rx = deque(saved(state, "rx", bytes)[:FIFO_SIZE])
        self.host_input = deque(saved(state, "host_input", bytes))
        for name in ("ier", "lcr", "mcr", "scr", "fcr", "divisor"):
            setattr(self, name, saved(state, name, int) & 0xFFFF)
        self.thre_pending = bool(saved(state, "thre_pending", int))
        self.overrun = bool(saved(state, "overrun", int))
        # No signal: what the line last raised is in the PLIC's own state, and
        # QEMU's serial_post_load does not call serial_update_irq either.
