"""passt, the user-mode network back end of a VM: one process per VM, and the link to it.

passt (Debian's package; https://passt.top) is the back end Podman uses: a
separate process that sandboxes itself (namespaces, seccomp, no privileges),
terminates the guest's TCP and UDP flows on host sockets (NAT), answers
ARP, DHCP and DNS forwarding, and forwards published host ports to the
guest. hartvm never parses a guest packet: frames go to passt as they are.

The two talk over a UNIX stream socket, one end of a ``socketpair()`` that
passt is given with ``--fd``: each frame is a 4-byte big-endian length and
the Ethernet frame, the framing of QEMU's ``-netdev stream``. passt ends
when its end of the socket closes, so a hartvm that dies, however it dies,
takes its passts with it.

``Passt`` starts the process and knows it ready when it has written its
pid file (after binding the published ports: a port in use ends it with a
message, which becomes a one-line error). ``PasstLink`` is the VMM's end of
the socket: it reads frames into the virtio-net device through the
machine's HostIO, and writes the device's frames without blocking, holding
up to ``MAX_UNSENT`` bytes while passt is slow (the transmit queue waits
beyond that). A passt that ends while the VM lives is reported (its last
message, as a warning) and the card's link goes down; the VM runs on.
"""

import logging
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

from ..devices.virtio.net import MAX_FRAME, TRANSMIT
from ..errors import HartvmError
from . import scratch
from .network import GATEWAY, GUEST_ADDRESS, HOST, NAMESERVER, PREFIX_LENGTH

log = logging.getLogger("hartvm.vmm")

PROGRAM = "passt"
# passt's own address on the guest's link: QEMU's user networking answers
# ARP for 10.0.2.2 as 52:55 and the address (libslirp's arp_input), and a
# fixed one keeps the guest's ARP cache true across snapshots and hosts
# (passt's default is the host interface's).
GATEWAY_MAC = "52:55:0a:00:02:02"
START_TIMEOUT = 10.0        # seconds passt may take to be ready
STOP_TIMEOUT = 2.0          # seconds passt may take to end after its socket closed
MAX_UNSENT = 1 << 20        # bytes of frames held for passt before the guest waits
LENGTH = struct.Struct(">I")
SOCKET_BUFFER = 4 << 20
DIRECTORY_PREFIX = "hartvm-passt-"


def command(mode: str, published, fd: int, pid_file: Path) -> list[str]:
    """passt's command line (passt(1)) for a VM in ``mode`` with ``published`` ports."""
    args = [PROGRAM, "--foreground", "--quiet", "--fd", str(fd), "--pid", str(pid_file),
            "--ipv4-only", "--address", GUEST_ADDRESS, "--netmask", str(PREFIX_LENGTH),
            "--gateway", GATEWAY, "--dns-forward", NAMESERVER, "--mac-addr", GATEWAY_MAC]
    if mode != HOST:
        # passt maps the gateway to the host's loopback unless told not to.
        args.append("--no-map-gw")
    for port in published:
        option = "--tcp-ports" if port.protocol == "tcp" else "--udp-ports"
        args += [option, f"{port.host_ip}/{port.host_port}:{port.guest_port}"]
    return args


class Passt:
    """A running passt for one VM; ``socket`` is the VMM's end of its link."""

    def __init__(self, mode: str, published=()):
        if shutil.which(PROGRAM) is None:
            raise HartvmError("--network needs passt: install Debian's passt package "
                              "(apt-get install passt)")
        self.directory = scratch.make(DIRECTORY_PREFIX)
        self.log_path = self.directory / "log"
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for end in (ours, theirs):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            # passt started by root drops to nobody before it writes its pid
            # file: the file is there already, writable, in a directory only
            # traversable by others.
            pid_file = self.directory / "pid"
            pid_file.touch(0o666)
            os.chmod(pid_file, 0o666)
            os.chmod(self.directory, 0o711)
            with open(self.log_path, "wb") as log_file:
                self.process = subprocess.Popen(
                    command(mode, published, theirs.fileno(), pid_file),
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                    stdout=log_file, stderr=log_file,
                    start_new_session=True)       # a Ctrl-C is hartvm's to handle
        except BaseException:
            ours.close()
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        finally:
            theirs.close()
        self.socket = ours
        try:
            self._wait_ready(pid_file, published)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, pid_file: Path, published) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not (pid_file.exists() and pid_file.stat().st_size):
            if self.process.poll() is not None:
                raise HartvmError(self._start_error(published))
            if time.monotonic() > deadline:
                raise HartvmError(f"passt did not start within {START_TIMEOUT:g} s")
            time.sleep(0.002)

    def _start_error(self, published) -> str:
        message = self.last_message()
        if "Failed to bind" in message:
            # passt names the option (-t 127.0.0.1/8080:80): say it as the user did.
            for port in published:
                if f"{port.host_ip}/{port.host_port}:" in message:
                    return f"cannot publish {port.host_ip}:{port.host_port}: the port is in use"
        return f"passt did not start: {message or f'exit status {self.process.returncode}'}"

    def last_message(self) -> str:
        """passt's last line of its own (syslog complaints left out)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        lines = [line for line in lines if line and not line.startswith(
            ("Failed to send", "Don't run as root"))]
        return lines[-1] if lines else ""

    def ended(self) -> str:
        """Why passt is gone, for a report: its status and last message."""
        status = self.process.poll()
        if status is None:
            try:
                status = self.process.wait(STOP_TIMEOUT)
            except (subprocess.TimeoutExpired, ChildProcessError):
                status = None
        how = "it closed its link" if status is None else \
            f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        message = self.last_message()
        return f"passt ended ({how}){': ' + message if message else ''}"

    def close(self) -> None:
        """End passt: closing its socket ends it; a passt that lingers is killed."""
        self.socket.close()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        except ChildProcessError:
            pass        # reaped already (a process that ignores SIGCHLD)
        shutil.rmtree(self.directory, ignore_errors=True)

    def forget(self) -> None:
        """In a forked child: let go of the parent's passt without ending it (the
        parent still uses it); only this process's copy of the socket closes."""
        self.socket.close()


class PasstLink:
    """The VMM's end of passt's socket, between it and the virtio-net ``device``,
    polled through ``io`` (the machine's HostIO). ``on_end(why)`` is called once
    if passt goes away while the link is up."""

    def __init__(self, passt: Passt, device, io, on_end):
        self.passt, self.device, self.io, self.on_end = passt, device, io, on_end
        self.fd = passt.socket.fileno()
        os.set_blocking(self.fd, False)
        self.inbox = bytearray()          # a frame's first bytes, until it is whole
        self.unsent = bytearray()
        self.closed = False
        self.input = io.add_input(self.fd, self._received, lambda: device.pending_bytes,
                                  self._ended)
        self.output = io.add_output(self.fd, lambda: bool(self.unsent), self._flush)

    @property
    def congested(self) -> bool:
        return len(self.unsent) >= MAX_UNSENT

    def send(self, frames) -> None:
        for frame in frames:
            self.unsent += LENGTH.pack(len(frame))
            self.unsent += frame
        self._flush()

    def _flush(self) -> None:
        if self.closed or not self.unsent:
            return
        was_congested = self.congested
        try:
            sent = os.write(self.fd, self.unsent)
        except BlockingIOError:
            return
        except OSError:
            self._ended()
            return
        del self.unsent[:sent]
        if was_congested and not self.congested and self.device.transport is not None:
            self.device.transport.kick(TRANSMIT)

    def _received(self, data: bytes) -> None:
        if self.closed:
            return
        inbox = self.inbox
        inbox += data
        start = 0
        while len(inbox) - start >= LENGTH.size:
            (length,) = LENGTH.unpack_from(inbox, start)
            if length > MAX_FRAME:
                log.warning("network: passt sent a frame of %d bytes; link closed", length)
                self._ended()
                return
            end = start + LENGTH.size + length
            if end > len(inbox):
                break
            self.device.receive(bytes(inbox[start + LENGTH.size:end]))
            start = end
        del inbox[:start]
        self.device.deliver()

    def _ended(self) -> None:
        if self.closed:
            return
        self.close()
        self.on_end(self.passt.ended())

    def close(self) -> None:
        """Stop polling the socket (passt itself is the owner's to end)."""
        if not self.closed:
            self.closed = True
            self.io.remove_input(self.input)
            self.io.remove_output(self.output)
            self.unsent.clear()
