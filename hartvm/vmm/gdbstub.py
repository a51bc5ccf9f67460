"""A GDB remote serial protocol stub (GDB manual, appendix E "Remote Protocol"),
so that ``gdb-multiarch`` (``target remote :PORT``) debugs a hartvm machine
as it would QEMU's ``-gdb tcp::PORT -S``.

Harts are threads (ids 1, 2, ...). The target description (``qXfer:features:read``)
has the integer registers and pc, the F and D registers with fflags, frm and
fcsr, the CSRs this hart implements, and the privilege level, numbered as
GDB numbers them for RISC-V, so ``info registers``, ``info all-registers``
and ``p $mstatus`` work. Memory goes through the selected hart's translation
(vmm/debugger.py). Breakpoints: ``Z0``/``Z1`` (both as ebreaks in memory);
write, read and access watchpoints ``Z2``/``Z3``/``Z4`` (machine memory hooks,
on the MMU's slow path). ``c``/``s``/``vCont``, Ctrl-C, and ``bs``/``bc`` (reverse-stepi
and reverse-continue; GDB builds reverse-step, -next and -finish on them),
``D`` (detach: the machine runs on), ``monitor info``, ``phys``, ``savevm``,
``loadvm`` and, in a VM, ``snapshot``. All-stop mode: while
one hart is stopped, all are.

A debugger on the network is a debugger of the guest, and more: the stub
listens on 127.0.0.1 only, and one client at a time. A client that breaks
the protocol gets an error reply or is dropped; nothing it sends reaches
anything but the machine it debugs.
"""

import select
import socket
from xml.sax.saxutils import escape as xml_escape

from ..errors import HartvmError
from .debugger import (Debugger, Event, FIRST_CSR_REGNUM, FIRST_FP_REGNUM, PC_REGNUM,
                            PRIV_REGNUM)

MAX_PACKET = 0x4000
SIGINT, SIGTRAP = 2, 5
XREG_NAMES = ["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "fp", "s1"] + \
    [f"a{i}" for i in range(8)] + [f"s{i}" for i in range(2, 12)] + [f"t{i}" for i in range(3, 7)]
FREG_NAMES = [f"ft{i}" for i in range(8)] + ["fs0", "fs1"] + [f"fa{i}" for i in range(8)] + \
    [f"fs{i}" for i in range(2, 12)] + [f"ft{i}" for i in range(8, 12)]
FP_CSRS = {1: "fflags", 2: "frm", 3: "fcsr"}
# Z2, Z3, Z4: write, read and access watchpoints, and how a stop names each.
WATCH_KINDS = {b"2": "w", b"3": "r", b"4": "rw"}
STOP_WATCH = {"w": b"watch", "r": b"rwatch", "rw": b"awatch"}


class Disconnected(Exception):
    """The debugger went away (or broke the framing)."""


def listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as error:
        listener.close()
        raise HartvmError(f"--gdb {port}: {error.strerror or error}") from None
    listener.listen(1)
    return listener


def target_xml(debugger: Debugger) -> str:
    cpu = "".join(f'<reg name="{name}" bitsize="64" type="{"code_ptr" if i == 1 else "int"}"'
                  f' regnum="{i}"/>' for i, name in enumerate(XREG_NAMES))
    cpu += f'<reg name="pc" bitsize="64" type="code_ptr" regnum="{PC_REGNUM}"/>'
    fpu = "".join(f'<reg name="{name}" bitsize="64" type="ieee_double" '
                  f'regnum="{FIRST_FP_REGNUM + i}"/>' for i, name in enumerate(FREG_NAMES))
    fpu += "".join(f'<reg name="{name}" bitsize="32" type="int" regnum="{FIRST_CSR_REGNUM + n}"/>'
                   for n, name in FP_CSRS.items())
    names = debugger.csr_names()
    csrs = "".join(f'<reg name="{xml_escape(name)}" bitsize="64" type="int" '
                   f'regnum="{FIRST_CSR_REGNUM + number}"/>'
                   for number, name in sorted(names.items())
                   if number not in FP_CSRS and debugger.read_register(0, FIRST_CSR_REGNUM + number)
                   is not None)
    virtual = f'<reg name="priv" bitsize="64" type="int" regnum="{PRIV_REGNUM}"/>'
    return ('<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">'
            '<target version="1.0"><architecture>riscv:rv64</architecture>'
            f'<feature name="org.gnu.gdb.riscv.cpu">{cpu}</feature>'
            f'<feature name="org.gnu.gdb.riscv.fpu">{fpu}</feature>'
            f'<feature name="org.gnu.gdb.riscv.csr">{csrs}</feature>'
            f'<feature name="org.gnu.gdb.riscv.virtual">{virtual}</feature></target>')


def _checksum(data: bytes) -> bytes:
    return b"%02x" % (sum(data) & 0xFF)


class Connection:
    """The packet layer: ``$data#cs`` with + acks until QStartNoAckMode, and the
    out-of-band Ctrl-C byte."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()
        self.acks = True
        self.interrupt = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def _fill(self, timeout: float | None) -> bool:
        if not select.select([self.sock], [], [], timeout)[0]:
            return False
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            raise Disconnected()
        self.buffer += data
        return True

    def poll_interrupt(self) -> bool:
        """Has a Ctrl-C (0x03) come while the machine runs? (Other bytes wait.)"""
        while self._fill(0):
            pass
        if 3 in self.buffer:
            del self.buffer[self.buffer.index(3)]
            self.interrupt = True
        if len(self.buffer) > 2 * MAX_PACKET:
            raise Disconnected()
        return self.interrupt

    def receive(self) -> bytes | None:
        """The next packet's data, or None for a Ctrl-C."""
        while True:
            while self.buffer[:1] in (b"+", b"-"):
                del self.buffer[:1]
            if self.buffer[:1] == b"\x03":
                del self.buffer[:1]
                return None
            start = self.buffer.find(b"$")
            if start > 0:
                del self.buffer[:start]
                continue
            end = self.buffer.find(b"#", 1)
            if start == 0 and end > 0 and len(self.buffer) >= end + 3:
                data = bytes(self.buffer[1:end])
                checksum = bytes(self.buffer[end + 1:end + 3])
                del self.buffer[:end + 3]
                if checksum.lower() != _checksum(data) and self.acks:
                    self.sock.sendall(b"-")
                    continue
                if self.acks:
                    self.sock.sendall(b"+")
                return _unescape(data)
            if len(self.buffer) > 2 * MAX_PACKET:
                raise Disconnected()
            self._fill(None)

    def send(self, data: bytes) -> None:
        escaped = bytearray()
        for byte in data:
            if byte in b"#$}*":
                escaped += bytes([0x7D, byte ^ 0x20])
            else:
                escaped.append(byte)
        try:
            self.sock.sendall(b"$" + escaped + b"#" + _checksum(escaped))
        except OSError:
            raise Disconnected() from None


def _unescape(data: bytes) -> bytes:
    if b"}" not in data:
        return data
    out, i = bytearray(), 0
    while i < len(data):
        if data[i] == 0x7D and i + 1 < len(data):
            out.append(data[i + 1] ^ 0x20)
            i += 2
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def _hex64(value: int) -> bytes:
    return value.to_bytes(8, "little").hex().encode()


class GdbStub:
    """One debugging session on a machine: ``serve(connection)`` answers packets
    until the debugger detaches or goes away (the machine runs on) or kills it;
    it returns the last event ("killed" for a kill; "exited" if the guest ended)."""

    def __init__(self, machine, snapshot=None):
        """``snapshot(path)``, if given, saves the machine as a snapshot directory
        (``monitor snapshot PATH``: a VM's, which ``hartvm restore`` runs)."""
        self.machine = machine
        self.snapshot = snapshot
        self.debugger = Debugger(machine)
        self.thread = 0          # the hart that g, p, m and friends read (Hg)
        self.last = Event("interrupt")
        self._xml = None

    # --- the session ----------------------------------------------------------------
    def serve(self, connection: Connection) -> Event:
        self.connection = connection
        self.machine.io.wake_fds.append(connection.fileno())
        try:
            while True:
                packet = connection.receive()
                if packet is None:            # Ctrl-C while stopped: say where we are
                    connection.send(self._stop_reply(Event("interrupt", self.thread)))
                    continue
                reply = self._handle(packet)
                if reply is DETACH:
                    connection.send(b"OK")
                    return self.last
                if reply is KILL:
                    return Event("killed")
                if reply is not None:
                    connection.send(reply)
        except Disconnected:
            return self.last                  # as a detach: the machine runs on
        finally:
            self.machine.io.wake_fds.remove(connection.fileno())

    def _handle(self, packet: bytes):
        command, body = packet[:1], packet[1:]
        try:
            handler = HANDLERS.get(command)
            if handler is None:
                return b""
            return handler(self, body)
        except (ValueError, IndexError, OverflowError):
            return b"E01"                    # a malformed packet
        except HartvmError as error:
            return b"E." + str(error).encode(errors="replace")

    # --- stops ---------------------------------------------------------------------------
    def _stop_reply(self, event: Event) -> bytes:
        self.last = event
        if event.kind == "exited":
            return b"W%02x" % (event.status & 0xFF)
        self.thread = event.hart
        signal = SIGINT if event.kind in ("interrupt", "halted") else SIGTRAP
        extra = b"replaylog:begin;" if event.kind == "history" else \
            b"%s:%x;" % (STOP_WATCH[event.access], event.address) if event.kind == "watch" else b""
        return b"T%02xthread:%x;%s" % (signal, event.hart + 1, extra)

    def _resume(self) -> bytes:
        self.connection.interrupt = False
        event = self.debugger.resume(self.connection.poll_interrupt)
        return self._stop_reply(event)

    def _step(self, hart: int) -> bytes:
        return self._stop_reply(self.debugger.step(hart))

    # --- packets ------------------------------------------------------------------------------
    def q(self, body: bytes):
        if body.startswith(b"Supported"):
            return (b"PacketSize=%x;qXfer:features:read+;ReverseStep+;ReverseContinue+;"
                    b"QStartNoAckMode+;vContSupported+" % MAX_PACKET)
        if body.startswith(b"Xfer:features:read:target.xml:"):
            offset, length = (int(part, 16) for part in body.split(b":")[-1].split(b","))
            self._xml = self._xml or target_xml(self.debugger).encode()
            chunk = self._xml[offset:offset + min(length, MAX_PACKET - 16)]
            return (b"l" if offset + len(chunk) >= len(self._xml) else b"m") + chunk
        if body == b"fThreadInfo":
            return b"m" + b",".join(b"%x" % (i + 1) for i in range(len(self.machine.harts)))
        if body == b"sThreadInfo":
            return b"l"
        if body == b"C":
            return b"QC%x" % (self.thread + 1)
        if body == b"Attached":
            return b"1"
        if body.startswith(b"Rcmd,"):
            return self._monitor(bytes.fromhex(body[5:].decode()).decode(errors="replace"))
        if body.startswith(b"ThreadExtraInfo,"):
            hart = self._hart(body.split(b",")[1])
            state = self.machine.harts[hart]
            return f"hart {hart}, {'USHM'[state.priv]}-mode".encode().hex().encode()
        if body.startswith(b"Symbol"):
            return b"OK"
        return b""

    def Q(self, body: bytes):
        if body == b"StartNoAckMode":
            self.connection.send(b"OK")
            self.connection.acks = False
            return None
        return b""

    def question(self, body: bytes):
        return self._stop_reply(Event(self.last.kind if self.last.kind != "exited" else "step",
                                      self.thread))

    def H(self, body: bytes):
        if body[1:] not in (b"0", b"-1"):
            hart = self._hart(body[1:])
            if body[:1] == b"g":
                self.thread = hart
        return b"OK"

    def T(self, body: bytes):
        self._hart(body)
        return b"OK"

    def _hart(self, thread: bytes) -> int:
        index = int(thread, 16) - 1
        if not 0 <= index < len(self.machine.harts):
            raise ValueError("no such thread")
        return index

    def g(self, body: bytes):
        return b"".join(_hex64(self.debugger.read_register(self.thread, n))
                        for n in range(PC_REGNUM + 1))

    def G(self, body: bytes):
        data = bytes.fromhex(body.decode())
        for n in range(min(PC_REGNUM + 1, len(data) // 8)):
            self.debugger.write_register(self.thread, n,
                                         int.from_bytes(data[8 * n:8 * n + 8], "little"))
        return b"OK"

    def p(self, body: bytes):
        regnum = int(body, 16)
        value = self.debugger.read_register(self.thread, regnum)
        if value is None:
            return b"E01"
        size = 4 if regnum - FIRST_CSR_REGNUM in FP_CSRS else 8
        return value.to_bytes(8, "little")[:size].hex().encode()

    def P(self, body: bytes):
        regnum, value = body.split(b"=")
        data = bytes.fromhex(value.decode())
        ok = self.debugger.write_register(self.thread, int(regnum, 16),
                                          int.from_bytes(data, "little"))
        return b"OK" if ok else b"E01"

    def m(self, body: bytes):
        address, length = (int(part, 16) for part in body.split(b","))
        data = self.debugger.read_memory(self.thread, address, min(length, MAX_PACKET // 2))
        return b"E14" if data is None else data.hex().encode()

    def M(self, body: bytes):
        where, data = body.split(b":")
        address, length = (int(part, 16) for part in where.split(b","))
        data = bytes.fromhex(data.decode())
        if len(data) != length:
            return b"E01"
        return b"OK" if self.debugger.write_memory(self.thread, address, data) else b"E14"

    def Z(self, body: bytes):
        kind, address, size = body.split(b",")[:3]
        address, size = int(address, 16), int(size, 16)
        if kind in (b"0", b"1"):
            ok = self.debugger.add_breakpoint(self.thread, address, size)
        elif kind in WATCH_KINDS:
            ok = self.debugger.add_watchpoint(address, size, WATCH_KINDS[kind])
        else:
            return b""
        return b"OK" if ok else b"E01"

    def z(self, body: bytes):
        kind, address = body.split(b",")[:2]
        if kind in (b"0", b"1"):
            self.debugger.remove_breakpoint(int(address, 16))
        elif kind in WATCH_KINDS:
            self.debugger.remove_watchpoint(int(address, 16), WATCH_KINDS[kind])
        else:
            return b""
        return b"OK"

    def c(self, body: bytes):
        if body:
            self.machine.harts[self.thread].pc = int(body, 16)
        return self._resume()

    def s(self, body: bytes):
        if body:
            self.machine.harts[self.thread].pc = int(body, 16)
        return self._step(self.thread)

    def b(self, body: bytes):
        if body == b"s":
            return self._stop_reply(self.debugger.reverse_step(self.thread))
        if body == b"c":
            return self._stop_reply(self.debugger.reverse_continue())
        return b""

    def v(self, body: bytes):
        if body == b"Cont?":
            return b"vCont;c;C;s;S"
        if body.startswith(b"Cont;"):
            actions = body[5:].split(b";")
            for action in actions:           # the first step action wins, as GDB sends it first
                verb, _, thread = action.partition(b":")
                if verb[:1] in (b"s", b"S"):
                    hart = self._hart(thread) if thread and thread != b"-1" else self.thread
                    return self._step(hart)
            return self._resume()
        if body == b"MustReplyEmpty":
            return b""
        if body.startswith(b"Kill"):
            return KILL
        return b""

    def D(self, body: bytes):
        return DETACH

    def k(self, body: bytes):
        return KILL

    def _monitor(self, command: str) -> bytes:
        words = command.split()
        machine, debugger = self.machine, self.debugger
        if words[:1] == ["info"]:
            text = (f"harts: {len(machine.harts)}, RAM: {machine.ram.size >> 20} MiB at "
                    f"{machine.ram.base:#x}, instructions: {debugger.position}, "
                    f"checkpoints: {len(debugger.checkpoints)} (reverse execution "
                    f"{'on' if debugger.reversible else 'off: guest time follows the host'})\n")
        elif words[:1] == ["phys"] and len(words) == 3:
            address, length = int(words[1], 0), min(int(words[2], 0), 256)
            if not machine.ram.contains(address, length):
                return b"E14"
            text = machine.ram.read(address, length).hex(" ") + "\n"
        elif words[:1] == ["savevm"] and len(words) == 2:
            debugger.save_vm(words[1])
            text = f"saved {words[1]} at instruction {debugger.position}\n"
        elif words[:1] == ["loadvm"] and len(words) == 2:
            if debugger.load_vm(words[1]):
                # (GDB keeps what it read: "maintenance flush register-cache" after this)
                text = f"loaded {words[1]}: instruction {debugger.position}\n"
            else:
                text = f"no snapshot named {words[1]}\n"
        elif words[:1] == ["snapshot"] and len(words) == 2 and self.snapshot is not None:
            self.snapshot(words[1])          # (a HartvmError is the reply's error)
            text = f"snapshot written to {words[1]}\n"
        else:
            text = ("monitor commands: info (the machine), phys ADDRESS LENGTH (physical "
                    "memory, in hex), savevm NAME and loadvm NAME (snapshots in memory)" +
                    (", snapshot PATH (the VM's, for hartvm restore)" if self.snapshot else "") +
                    "\n")
        return text.encode().hex().encode()


DETACH, KILL = object(), object()
HANDLERS = {b"q": GdbStub.q, b"Q": GdbStub.Q, b"?": GdbStub.question, b"H": GdbStub.H,
            b"T": GdbStub.T, b"g": GdbStub.g, b"G": GdbStub.G, b"p": GdbStub.p,
            b"P": GdbStub.P, b"m": GdbStub.m, b"M": GdbStub.M, b"Z": GdbStub.Z,
            b"z": GdbStub.z, b"c": GdbStub.c, b"s": GdbStub.s, b"b": GdbStub.b,
            b"v": GdbStub.v, b"D": GdbStub.D, b"k": GdbStub.k}


def debug(machine, port: int, announce=print) -> Event:
    """Hold ``machine`` before its next instruction until a debugger attaches on
    127.0.0.1:``port``, then serve it (see GdbStub.serve)."""
    listener = listen(port)
    try:
        announce(f"hartvm: waiting for gdb on 127.0.0.1:{listener.getsockname()[1]} "
                 f"(target remote :{listener.getsockname()[1]})")
        client, _ = listener.accept()
    finally:
        listener.close()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with client:
        return GdbStub(machine).serve(Connection(client))
