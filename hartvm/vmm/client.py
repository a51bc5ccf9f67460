"""``RemoteVM``: the handle of a long-running VM, which lives in its own process.

``RemoteVM.up()`` starts a VM process (server.py) and waits until it
listens; the other methods send one request each over its control socket
(protocol.py). The handle holds no state but the name, so any process may
make one with ``RemoteVM(name)``. A VM whose process died is reported as
dead (``GuestError``) at once, never waited for. Importable without numpy:
this is what ``hartvm exec``, ``ps`` and ``stop`` use.
"""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

from ..errors import HartvmError, shown
from .arguments import (check_command_io, check_term, check_terminal, check_terminal_size,
                        check_timeout, checked_filter, command_words, path_argument)
from ..hostfile import drive_specs
from .. import exit_status, limits
from ..code_digest import code_digest
from ..limits import check_harts, guest_memory_size
from . import images, protocol, registry
from .files import FileTransfer
from .network import NONE as NO_NETWORK, check_mode, parse_publish_list
from .results import CommandIO, CommandResult, CommandTimeout, GuestError
from .volumes import parse_volumes

REQUEST_TIMEOUT = 30        # seconds a VM may take to answer a request other than exec
# Seconds a stopping VM (told to stop, or sent SIGTERM when it does not answer)
# may take to end before it is killed: it flushes its drives first, within a
# budget of guest instructions (flush.py) that this outlasts.
STOP_WAIT = 60
STOP_GRACE = 5              # seconds a killed VM process may take to go
MAX_STDIN_BUFFER = 1 << 20


class RemoteVM(FileTransfer):
    def __init__(self, name: str):
        self.name = registry.check_name(name)

    def __repr__(self) -> str:
        return f"RemoteVM({self.name!r})"

    # --- starting ----------------------------------------------------------------
    @classmethod
    def up(cls, name: str | None = None, memory="256M", smp: int = 1, drives=(),
           snapshot=None, progress: bool = True, pool: bool = False,
           volumes=(), image: str = "busybox", disk_size=None,
           network: str = NO_NETWORK, publish=(), gdb: int | None = None) -> "RemoteVM":
        """Start a VM in a process of its own (from ``snapshot`` if given, else the
        default guest) and return its handle once it answers. Its hostname is its
        name. ``pool``: start the run pool (see RunPool) instead, with a network
        card unplugged unless ``network`` is "none". ``volumes``: host
        directories shared for the VM's life (volumes.py); ``network``,
        ``publish``: its network and published ports (network.py). ``gdb``: a
        TCP port on 127.0.0.1 where gdb may attach at any time (gdbstub.py)."""
        size = guest_memory_size(memory)
        check_harts(smp)
        check_mode(network)
        published = [str(port) for port in parse_publish_list(publish, network)]
        volumes = [volume.as_request() for volume in parse_volumes(volumes)]
        images.check_name(image)
        disk_size = limits.disk_size(disk_size)
        if gdb is not None and (type(gdb) is not int or not 0 < gdb < 65536 or pool):
            raise HartvmError(f"bad gdb port {shown(gdb)}: 1 to 65535, not for a run pool")
        drives = [_absolute_drive(spec) for spec in drive_specs(drives)]
        # Everything is checked before the name is claimed: a refusal leaves nothing.
        if snapshot is not None:
            snapshot = os.path.abspath(path_argument(snapshot, "snapshot"))
            if not os.path.isdir(snapshot):
                raise HartvmError(f"{shown(snapshot)}: no such snapshot directory")
        else:
            # Imported here, not above: this module must stay light for `hartvm run`
            # and `exec` (the Debian fetcher is needed only to start a new guest).
            from ..guest import debian
            debian.default_guest(progress=progress)     # a first download shows its progress
        name, directory = registry.claim(name)
        ready_read, ready_write = os.pipe()
        config = {"directory": str(directory), "ready_fd": ready_write, "snapshot": snapshot,
                  "memory": size, "smp": smp, "drives": drives, "pool": pool,
                  "volumes": volumes, "image": image,
                  "disk_size": disk_size,
                  "network": network, "publish": published, "gdb": gdb,
                  "hostname": "hartvm" if pool else name}
        try:
            with open(directory / registry.LOG, "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "hartvm.vmm.server", json.dumps(config)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                    pass_fds=[ready_write], start_new_session=True)
            registry.write_starting(directory, process.pid, size, smp)
        except OSError as error:
            registry.remove(directory)
            raise HartvmError(f"cannot start the VM process: {error}") from None
        finally:
            os.close(ready_write)
        with os.fdopen(ready_read, "rb") as ready:
            answer = ready.read().decode(errors="replace").strip()
        if answer != "ok":
            registry.remove(directory)
            raise HartvmError(f"VM {name} did not start: {answer or 'its process died'}")
        return cls(name)

    @classmethod
    def restore(cls, path, name: str | None = None, network: str = NO_NETWORK,
                publish=()) -> "RemoteVM":
        """A VM process restored from the snapshot directory ``path``."""
        path_argument(path, "snapshot")         # (up() without one would boot a new VM)
        return cls.up(name=name, snapshot=path, network=network, publish=publish)

    # --- requests -------------------------------------------------------------------
    def _connect(self, timeout: float | None = REQUEST_TIMEOUT) -> socket.socket:
        info = registry.find(self.name)
        if info.state == "dead":
            raise GuestError(f"VM {self.name} is dead (its process {info.pid} is gone); "
                             f"hartvm stop {self.name} removes it")
        if info.state == "starting":
            raise GuestError(f"VM {self.name} is still starting")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(info.socket))
        except OSError as error:
            sock.close()
            raise GuestError(f"VM {self.name} does not answer on {info.socket}: "
                             f"{error.strerror or error}") from None
        return sock

    def _request(self, op: str, timeout: float | None = REQUEST_TIMEOUT, **fields) -> dict:
        with self._connect(timeout) as sock:
            try:
                protocol.send_json(sock, protocol.REQUEST, {"op": op, **fields})
                kind, payload = protocol.recv_frame(sock)
                reply = protocol.decode_json(payload)
            except socket.timeout:
                raise GuestError(f"VM {self.name} did not answer in {timeout} s") from None
            except (OSError, protocol.ProtocolError) as error:
                raise GuestError(f"VM {self.name} went away: {error}") from None
        return _result(self.name, reply)

    def ping(self) -> dict:
        return self._request("ping")

    def snapshot(self, path) -> None:
        """Pause the VM, save it as the snapshot directory ``path``, resume it."""
        self._request("snapshot", timeout=None,
                      path=os.path.abspath(path_argument(path, "snapshot path")))

    def fork(self, count: int = 1) -> list["RemoteVM"]:
        """``count`` running clones of this VM, sharing its memory copy-on-write."""
        names = self._request("fork", timeout=None, count=count)["names"]
        return [RemoteVM(name) for name in names]

    def info(self) -> registry.VMInfo:
        return registry.find(self.name)

    def stop(self) -> None:
        """End the VM (a dead one is cleaned up); waits until its process is gone."""
        info = registry.find(self.name)
        if info.state != "dead" and info.pid:
            try:
                self._request("stop", timeout=10)
            except GuestError:
                _terminate(info.pid)
            _wait_gone(info)
        registry.remove(info.directory)

    # --- commands -------------------------------------------------------------------------
    def run(self, args, input: bytes | str | None = None, env=None, cwd=None,
            timeout: float | None = None, stdout=None, stderr=None,
            stdin_fd: int | None = None, check: bool = False, text: bool = False,
            encoding: str | None = None, errors: str | None = None,
            volumes=None) -> CommandResult:
        """Run a command in the VM, as ``VM.run`` does."""
        if isinstance(args, (str, bytes)):
            args = ["sh", "-c", args]
        args, env, cwd = command_words(list(args), env, cwd)
        io = CommandIO(args, input, text, encoding, errors, stdout, stderr)
        check_command_io(io.input, timeout, io.stdout, io.stderr, stdin_fd)
        request = {"op": "exec", "args": args, "timeout": timeout, "env": env, "cwd": cwd,
                   **self._run_fields()}
        if volumes:
            request["volumes"] = [volume.as_request() for volume in parse_volumes(volumes)]
        with self._connect() as sock:
            sock.settimeout(None)
            protocol.widen(sock)         # the command's stdin streams through it
            protocol.send_json(sock, protocol.REQUEST, request)
            reply = _exchange_command_io(sock, io.input, stdin_fd,
                                         {protocol.OUT: io.stdout, protocol.ERR: io.stderr})
        if reply is None:
            raise GuestError(f"VM {self.name} went away while running {args[0]}")
        if reply.get("network_error"):
            print(f"hartvm: network: {reply['network_error']}; the guest's link is down",
                  file=sys.stderr)
        try:
            status = _result(self.name, reply)["status"]
        except CommandTimeout as error:
            raise io.timed_out(error, timeout) from None
        return io.result(status, reply.get("instructions", 0), check)

    def shell(self, terminal_fd: int, output, rows: int = 24, columns: int = 80,
              term: str = "vt100", input_filter=None, args=None, window=None,
              timeout: float | None = None, env=None, cwd=None) -> int:
        """``VM.shell`` in this VM: a login shell (or ``args``) on the guest's
        terminal, with the keys of ``terminal_fd`` (through ``input_filter``)
        and the ``window``'s sizes sent on as frames (protocol.py)."""
        check_terminal(terminal_fd, output, rows, columns, term, input_filter, window)
        keys = checked_filter(input_filter) if input_filter else (lambda data: data)
        with self.terminal(rows, columns, term, args, timeout, env, cwd) as sock:
            reply = _exchange_command_io(
                sock, None, terminal_fd, {protocol.OUT: output},
                encode=lambda data: protocol.frame(protocol.KEYS, keys(data)), window=window)
        if reply is None:
            raise GuestError(f"VM {self.name} went away during the terminal session")
        return _result(self.name, reply)["status"]

    def terminal(self, rows: int = 24, columns: int = 80, term: str = "vt100", args=None,
                 timeout: float | None = None, env=None, cwd=None) -> socket.socket:
        """A connection to a login shell (or ``args``) on the guest's terminal, as
        ``shell`` runs it, for a caller that moves the bytes itself (the browser
        console): send it KEYS and RESIZE frames, read OUT frames until the
        REPLY (protocol.py). Closing it ends the shell."""
        check_terminal_size(rows, columns)
        check_term(term)
        check_timeout(timeout)
        login = args is None
        args, env, cwd = command_words(list(args or ["sh", "-l"]), env, cwd)
        request = {"op": "exec", "args": args, "timeout": timeout, "env": env, "cwd": cwd,
                   "terminal": {"rows": rows, "columns": columns, "term": term,
                                "login": login}, **self._run_fields()}
        sock = self._connect()
        try:
            sock.settimeout(None)
            protocol.send_json(sock, protocol.REQUEST, request)
        except OSError as error:
            sock.close()
            raise GuestError(f"VM {self.name} went away: {error}") from None
        return sock

    # --- a with block ------------------------------------------------------------------
    # A handle holds no connection (each request opens its own), so the only thing
    # a with block can end is the VM itself: on exit it is stopped, as e2b's
    # Sandbox is killed and a `with hartvm.VM()` is closed. Its drives are
    # flushed first (see VM.close). A VM meant to outlive the block is used
    # without one.
    def __enter__(self) -> "RemoteVM":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


    def _run_fields(self) -> dict:
        return {}


POOL_START_TRIES = 50


class RunPool(RemoteVM):
    """``hartvm run`` without drives: each command in a fresh VM forked from a
    paused, restored default guest (server.PoolServer), one pool per RAM size
    and hart count, named ``run-pool-<MiB>m-<harts>``. The first run starts
    the pool (and, the very first time, boots the guest for the snapshot
    cache); it exits by itself after ten idle minutes or when hartvm changes.
    ``hartvm ps`` lists it and ``hartvm stop`` stops it like any VM."""

    def __init__(self, memory: int, smp: int = 1, realtime: bool = False, progress: bool = True,
                 image: str = "busybox", disk_size: int | None = None,
                 network: str = NO_NETWORK, publish=()):
        check_mode(network)
        self.published = [str(port) for port in parse_publish_list(publish, network)]
        suffix = "" if image == "busybox" else f"-{image}"
        suffix += "" if disk_size is None else f"-{disk_size >> 20}m"
        suffix += "" if network == NO_NETWORK else "-net"
        super().__init__(f"run-pool-{memory >> 20}m-{smp}{suffix}")
        self.memory, self.smp, self.image, self.disk_size = memory, smp, image, disk_size
        self.realtime, self.progress, self.network = realtime, progress, network
        self.digest = code_digest()

    def _run_fields(self) -> dict:
        return {"op": "run", "digest": self.digest, "hostname": "hartvm",
                "realtime": self.realtime, "network": self.network,
                "publish": self.published}

    def _connect(self, timeout: float | None = REQUEST_TIMEOUT) -> socket.socket:
        # A pool that has just answered "stale" is still exiting: its process
        # lives (so it is not dead yet, and a new one cannot take its name) but
        # no longer accepts. Try again for a few seconds, until it is gone.
        for _ in range(POOL_START_TRIES):
            try:
                return super()._connect(timeout)
            except HartvmError:
                self._start()
            time.sleep(0.1)
        return super()._connect(timeout)

    def _start(self) -> None:
        """Start the pool, unless another hartvm just did; clean up a dead one."""
        try:
            info = registry.find(self.name)
        except HartvmError:
            info = None
        if info is not None and info.state == "dead":
            registry.remove(info.directory)
        try:
            RemoteVM.up(name=self.name, memory=self.memory, smp=self.smp,
                        progress=self.progress, pool=True, image=self.image,
                        disk_size=self.disk_size, network=self.network)
        except HartvmError as error:
            if "exists already" not in str(error):
                raise
            _wait_listening(self.name)

    def run(self, args, **options) -> CommandResult:
        try:
            return super().run(args, **options)
        except GuestError as error:
            if "stale" not in str(error):
                raise
            return super().run(args, **options)    # the old pool has gone; a new one starts


def _wait_listening(name: str, seconds: float = 600) -> None:
    """Another hartvm is starting the VM ``name``: wait until it answers or dies."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if registry.find(name).state != "starting":
                return
        except HartvmError:
            return             # gone
        time.sleep(0.05)


def _result(name: str, reply: dict) -> dict:
    if reply.get("ok"):
        return reply
    error = str(reply.get("error", "unknown error"))
    if reply.get("status") == exit_status.TIMEOUT:
        raise CommandTimeout(error)
    raise GuestError(f"VM {name}: {error}")


def _exchange_command_io(sock, input: bytes | None, stdin_fd: int | None,
                         sinks, encode=None, window=None) -> dict | None:
    """Send stdin while receiving output frames; the REPLY, or None if the VM went away.
    ``encode(bytes) -> bytes``: what stdin's bytes are sent as (a terminal's
    KEYS frames); ``window``: a frontends.console.WindowSize, whose changes
    are sent as RESIZE frames."""
    pending = bytearray(input or b"")
    stdin_open = stdin_fd is not None
    sending = True
    buffer = bytearray()
    sock.setblocking(False)
    while True:
        if sending and not pending and not stdin_open:
            sock.shutdown(socket.SHUT_WR)       # the command reads end of file
            sending = False
        readers = [sock] + ([stdin_fd] if stdin_open and len(pending) < MAX_STDIN_BUFFER else [])
        readers += [window.fd] if window is not None and sending else []
        writers = [sock] if sending and pending else []
        readable, writable, _ = select.select(readers, writers, [])
        if window is not None and window.fd in readable:
            rows, columns = window.size()
            pending += protocol.frame(protocol.RESIZE, json.dumps(
                {"rows": rows, "columns": columns}).encode())
        if stdin_fd in readable:
            try:
                data = os.read(stdin_fd, 65536)
            except OSError:
                data = b""
            if data:
                pending += encode(data) if encode is not None else data
            else:
                stdin_open = False
        if writable:
            try:
                del pending[:sock.send(pending)]
            except BlockingIOError:
                pass
            except OSError:
                sending, stdin_open, pending = False, False, bytearray()
        if sock in readable:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                return None
            buffer += data
            while len(buffer) >= protocol.HEADER.size:
                kind, length = protocol.HEADER.unpack_from(buffer)
                if len(buffer) < protocol.HEADER.size + length:
                    break
                payload = bytes(buffer[protocol.HEADER.size:protocol.HEADER.size + length])
                del buffer[:protocol.HEADER.size + length]
                if kind == protocol.REPLY:
                    return protocol.decode_json(payload)
                if kind in sinks:
                    sinks[kind](payload)


def _absolute_drive(spec: str) -> str:
    path, comma, options = spec.partition(",")
    return os.path.abspath(path) + comma + options


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _wait_gone(info: registry.VMInfo) -> None:
    """Wait for the VM process to end; SIGKILL it if it does not within STOP_WAIT."""
    started = registry.process_start_time(info.pid)
    for signal_number, wait in ((None, STOP_WAIT), (signal.SIGKILL, STOP_GRACE)):
        if signal_number is not None:
            try:
                os.kill(info.pid, signal_number)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if started is None or registry.process_start_time(info.pid) != started:
                return
            time.sleep(0.01)
