"""A long-running VM: the process behind ``hartvm up``, ``restore`` and ``fork``.

The process owns one ``VM`` and a control socket in its directory (see
registry.py), and runs the guest all the time: between commands idle guest
time passes at the host's pace, as in any hypervisor, so that daemons in
the guest keep running. A connection on the socket wakes it (the socket is
one of the VM's HostIO wake-up descriptors); one request is served per connection (see
protocol.py):

- ``exec``: run a command, streaming its output; one at a time.
- ``snapshot``: pause, save to a path, resume.
- ``fork``: K clones, each a child process made by ``os.fork``: its guest
  RAM is the parent's, shared copy-on-write by the host kernel, its drives
  get their own overlays, and it takes a new identity (hostname, clock,
  entropy) before it serves its own socket.
- ``stop``: reply, then end the process and remove its directory.
- ``ping``: is it alive and what is it doing.

``PoolServer`` is the variant behind ``hartvm run``: see its docstring.

While a command runs, other requests are still taken between rounds of the
guest: ``stop`` ends the VM at once, ``ping`` answers, and ``exec``,
``snapshot`` and ``fork`` wait their turn (the agent runs one command at a
time). The VM process never trusts the client: a bad request
gets an error reply, a client that goes away loses the command's output.
"""

import collections
import gc
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from ..code_digest import code_digest
from ..errors import HartvmError
from ..exit_status import GUEST_FAILED as EXIT_FAILED, TIMEOUT as EXIT_TIMEOUT
from . import gdbstub, protocol, registry
from .results import CommandTimeout, GuestError, Interrupted
from .vm import VM, booted_snapshot
from .volumes import from_request

MAX_FORKS = 64
POOL_IDLE = 600          # seconds a run pool waits for a request before it exits
REQUEST_WAIT = 2         # seconds a connection may take to send its request
MAX_WAITING = 64         # requests that wait for a running command to finish, at most


class StopRequested(Exception):
    """``stop`` arrived: end the VM process (raised by the server's own code,
    never through the machine: a running command is interrupted by
    ``_serve_while_busy`` returning True, and the VM raises ``Interrupted``)."""


class Server:
    def __init__(self, vm: VM, name: str, directory: Path, parent: str = ""):
        self.vm = vm
        self.name = name
        self.directory = directory
        self.parent = parent
        self.started = time.time()
        self.busy = False
        self.listener = None
        self.client = None              # the connection of the running command
        self.waiting = collections.deque()   # (connection, request) that came meanwhile
        self.client_lost = False
        self.stop_requested = False      # a stop came while a command ran
        self.debug_listener = None       # where gdb attaches (up --gdb)

    # --- life cycle ----------------------------------------------------------------
    def listen(self) -> None:
        path = self.directory / registry.SOCKET
        path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(str(path))
        except OSError as error:
            raise HartvmError(f"cannot create the control socket {path}: "
                              f"{error.strerror or error}") from None
        self.listener.listen(64)
        registry.write_info(self.directory, pid=os.getpid(), memory=self.vm.machine.ram.size,
                            harts=len(self.vm.machine.harts), started=self.started,
                            parent=self.parent)

    def start(self) -> None:
        """Listen, and give the guest its clock and hostname now, which also proves
        it alive within a bound of instructions (``VM._set_identity``); then let
        its idle time pass at the host's pace, and say ready."""
        self.listen()
        self.vm.log.mirror_to(self.directory / registry.LOG)      # for `hartvm logs`
        self.vm.service = None        # (a clone's is still its parent's) no requests before that
        self.vm.apply_identity()
        self.vm.io.wake_fds.append(self.listener.fileno())
        self.vm.io.realtime = True
        self.vm.service = self._serve_while_busy

    def serve_forever(self) -> None:
        """Run the guest and serve requests until ``stop`` or the guest's end."""
        failed = False
        try:
            while True:
                if self.waiting:                  # came while a command ran: in order
                    connection, request = self.waiting.popleft()
                    with connection:
                        self._dispatch(connection, request)
                    continue
                self.vm.idle(until=self._connection_waiting)
                if self._readable(self.debug_listener):
                    self._debug()
                    continue
                connection, _ = self.listener.accept()
                with connection:
                    request = self._read_request(connection)
                    if request is not None:
                        self._dispatch(connection, request)
        except (StopRequested, Interrupted):
            pass
        except GuestError as error:
            # The guest powered off, rebooted or panicked: the VM is dead. Its
            # directory stays, with the reason in its log, until `hartvm stop`.
            print(f"hartvm: VM {self.name}: {error}", file=sys.stderr)
            failed = True
        finally:
            self._close_listener()
            for connection, _ in self.waiting:
                connection.close()
            self.vm.close()
            if failed:
                (self.directory / registry.SOCKET).unlink(missing_ok=True)
            else:
                registry.remove(self.directory)

    def _close_listener(self) -> None:
        """Close the control socket (and gdb's), which are no wake-ups of the VM's
        any more (a clone's are its parent's: it has none of its own)."""
        for listener in (self.listener, self.debug_listener):
            if listener is None:
                continue
            fd = listener.fileno()
            if fd in self.vm.io.wake_fds:
                self.vm.io.wake_fds.remove(fd)
            listener.close()
        self.debug_listener = None

    def _connection_waiting(self) -> bool:
        return self._readable(self.listener) or self._readable(self.debug_listener)

    @staticmethod
    def _readable(sock) -> bool:
        return sock is not None and bool(select.select([sock], [], [], 0)[0])

    def listen_for_gdb(self, port: int) -> None:
        self.debug_listener = gdbstub.listen(port)
        self.vm.io.wake_fds.append(self.debug_listener.fileno())

    def _debug(self) -> None:
        """A gdb session, between commands: the VM stops on attach, and runs on
        (its commands served again) when gdb detaches or goes away."""
        client, _ = self.debug_listener.accept()
        with client:
            ended = gdbstub.GdbStub(self.vm.machine, self.vm.snapshot).serve(
                gdbstub.Connection(client))
        if ended.kind == "killed":
            raise StopRequested()
        if ended.kind in ("exited", "halted"):
            raise GuestError("the guest ended while gdb debugged it")

    # --- requests ----------------------------------------------------------------------
    @staticmethod
    def _read_request(connection) -> dict | None:
        """The request of a new connection, or None if it sends none in time."""
        # A client sends its request at once; one that does not must not stall the guest long.
        connection.settimeout(REQUEST_WAIT)
        try:
            kind, payload = protocol.recv_frame(connection)
            request = protocol.decode_json(payload)
        except (OSError, protocol.ProtocolError):
            return None
        connection.settimeout(None)
        return request if kind == protocol.REQUEST else None

    def _dispatch(self, connection, request: dict) -> None:
        op = request.get("op")
        try:
            if op == "exec":
                self._exec(connection, request)
            elif op == "snapshot":
                self._reply(connection, ok=True, path=self._snapshot(request))
            elif op == "fork":
                self._reply(connection, ok=True, names=self._fork(request, connection))
            elif op == "stop":
                self._reply(connection, ok=True)
                raise StopRequested
            elif op == "ping":
                self._reply(connection, ok=True, name=self.name, busy=self.busy)
            else:
                self._reply(connection, error=f"unknown request {op!r}", status=EXIT_FAILED)
        except HartvmError as error:
            self._reply(connection, error=str(error),
                        status=EXIT_TIMEOUT if isinstance(error, CommandTimeout) else EXIT_FAILED)
            if self.vm.closed:            # the guest failed, or would not let a command go:
                raise GuestError(str(error)) from None   # dead, its log kept
        except (StopRequested, Interrupted, GuestError):
            raise
        except Exception as error:   # noqa: BLE001 - a hartvm bug must not take the VM down
            traceback.print_exc()
            self._reply(connection, error=f"internal error: {error!r} (see {self.directory}/log)",
                        status=EXIT_FAILED)

    def _client_gone(self) -> bool:
        """Has the client of the running command closed its connection (both ways:
        a client that only ended its stdin is still there)?"""
        if self.client is None:
            return False
        if not self.client_lost:
            poller = select.poll()
            poller.register(self.client, select.POLLHUP)
            self.client_lost = bool(poller.poll(0))
        return self.client_lost

    def _serve_while_busy(self) -> bool:
        """Between rounds of a running command: kill it if its client went away
        (the VM runs on), and answer who is waiting: ``stop`` and ``ping`` at once,
        other requests in turn once the command has finished. True once a
        ``stop`` came: the VM's run then ends (``Interrupted``)."""
        if self._client_gone():
            self.vm.cancel()
        while not self.stop_requested and self._connection_waiting():
            connection, _ = self.listener.accept()
            request = self._read_request(connection)
            op = None if request is None else request.get("op")
            if op in ("stop", "ping") or request is None or len(self.waiting) >= MAX_WAITING:
                with connection:
                    if op == "stop":
                        self._reply(connection, ok=True)
                        self.stop_requested = True
                    elif op == "ping":
                        self._reply(connection, ok=True, name=self.name, busy=True,
                                    waiting=len(self.waiting))
                    elif request is not None:
                        self._reply(connection, error=f"VM {self.name} has {MAX_WAITING} "
                                    f"requests waiting already", status=EXIT_FAILED)
            else:
                self.waiting.append((connection, request))
        return self.stop_requested

    @staticmethod
    def _reply(connection, **fields) -> None:
        try:
            protocol.send_json(connection, protocol.REPLY, fields)
        except OSError:
            pass        # the client went away

    def _exec(self, connection, request) -> None:
        args = request.get("args")
        env = request.get("env") or {}
        timeout = request.get("timeout")
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args) \
                or not isinstance(env, dict) or not isinstance(request.get("cwd"), (str, type(None))) \
                or not (timeout is None or type(timeout) in (int, float) and 0 < timeout < 1e9):
            raise HartvmError("bad exec request")
        volumes = from_request(request.get("volumes"))   # each a host directory that exists
        self.client, self.client_lost = connection, False
        protocol.widen(connection)      # the command's output streams through it

        def forward(kind):
            def send(data: bytes) -> None:
                if not self.client_lost:
                    try:
                        protocol.send_frame(connection, kind, data)
                    except OSError:
                        self.client_lost = True     # and the command is killed
            return send

        self.busy = True
        network_error = self.vm.network_error
        terminal = request.get("terminal")
        try:
            if terminal is not None:
                status, instructions = self._on_terminal(connection, request, terminal,
                                                         forward(protocol.OUT)), 0
            else:
                result = self.vm.run(args, env=env, cwd=request.get("cwd"),
                                     timeout=float(timeout) if timeout else None,
                                     stdout=forward(protocol.OUT), stderr=forward(protocol.ERR),
                                     stdin_fd=connection.fileno(), volumes=volumes)
                status, instructions = result.returncode, result.instructions
        finally:
            self.busy = False
            self.client = None
        extra = {}
        if self.vm.network_error and self.vm.network_error != network_error:
            extra["network_error"] = self.vm.network_error    # passt ended during it
        self._reply(connection, ok=True, status=status, instructions=instructions, **extra)

    def _on_terminal(self, connection, request, terminal, output) -> int:
        """``exec -t`` and ``shell NAME``: ``args`` (or a login shell) on the guest's
        terminal; the client's keys and window sizes come as frames."""
        if not isinstance(terminal, dict) or not isinstance(terminal.get("term"), str):
            raise HartvmError("bad exec request: terminal")
        try:
            rows, columns = protocol.terminal_size(terminal.get("rows"), terminal.get("columns"))
        except protocol.ProtocolError as error:
            raise HartvmError(f"bad exec request: {error}") from None
        frames = protocol.TerminalInput(self.vm.terminal.resize)
        timeout = request.get("timeout")
        return self.vm.shell(connection.fileno(), output, rows, columns, terminal["term"],
                             input_filter=frames.filter,
                             args=None if terminal.get("login") else request["args"],
                             timeout=float(timeout) if timeout else None,
                             env=request.get("env") or {}, cwd=request.get("cwd"))

    def _snapshot(self, request) -> str:
        path = request.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise HartvmError("bad snapshot request: the path must be absolute")
        self.vm.snapshot(path)
        return path

    # --- fork -----------------------------------------------------------------------------
    def _fork(self, request, connection) -> list[str]:
        count = request.get("count")
        if not isinstance(count, int) or not 1 <= count <= MAX_FORKS:
            raise HartvmError(f"bad fork count {count!r}: 1 to {MAX_FORKS}")
        vm = self.vm
        vm.freeze_drives(self._disk_path(self.directory))
        gc.collect()
        gc.freeze()          # objects stay out of the collector: fewer pages copied by forks
        # Each clone says "copied" once it has its own drive overlays (until then
        # this VM must not write its own, and forks no other), then "ok" once it
        # listens with its new identity; the clones do that part side by side.
        clones = []
        for _ in range(count):
            name, directory = registry.claim(None, prefix=self.name)
            ready_read, ready_write = os.pipe()
            if os.fork() == 0:
                os.close(ready_read)
                self._become_clone(name, directory, ready_write, connection)
            os.close(ready_write)
            ready = os.fdopen(ready_read, "rb")
            clones.append((name, directory, ready))
            if ready.readline().strip() != b"copied":
                break
        failures = []
        for name, directory, ready in clones:
            with ready:
                answer = ready.readline().decode(errors="replace").strip()
            if answer != "ok":
                registry.remove(directory)
                failures.append(f"clone {name} did not start: {answer or 'it died'}")
        if failures or len(clones) < count:
            raise HartvmError("; ".join(failures) or "a clone did not start")
        return [name for name, _, _ in clones]

    @staticmethod
    def _disk_path(directory: Path) -> Path:
        """Where the VM in ``directory`` keeps its drive overlays."""
        (directory / "disks").mkdir(exist_ok=True)
        return directory / "disks"

    def _become_clone(self, name: str, directory: Path, ready_write: int, connection) -> None:
        """In the child of a fork: become VM ``name``; never returns."""
        status = 0
        try:
            connection.close()
            self._close_listener()
            _redirect_output(directory / registry.LOG)
            self.vm.clone_drives(self._disk_path(directory))
            os.write(ready_write, b"copied\n")
            self.vm.new_identity(name)
            if self.vm.card is not None:
                # The parent's passt stays the parent's: a clone gets its own, the
                # same network without the published ports.
                mode = self.vm.card.mode
                self.vm.card.forget()
                self.vm.plug_network(mode)
            clone = Server(self.vm, name, directory, parent=self.name)
            clone.start()
            os.write(ready_write, b"ok\n")
            os.close(ready_write)
            clone.serve_forever()
        except BaseException as error:  # noqa: BLE001 - the child must never unwind into the parent's code
            try:
                os.write(ready_write, f"{error}\n".encode())
            except OSError:
                pass
            traceback.print_exc()
            status = 1
        finally:
            os._exit(status)


class PoolServer(Server):
    """The run pool behind ``hartvm run``: a restored default guest that never runs
    itself. Each ``run`` request is served by a child made by ``os.fork``, which
    takes a new identity, runs the one command on the request's connection and
    exits: a fresh VM per command in milliseconds, as many at once as asked
    for. The pool exits when hartvm's code changes (a request carries the
    client's source digest), after ``POOL_IDLE`` seconds without requests, or
    when its directory is removed."""

    def __init__(self, vm: VM, name: str, directory: Path, digest: str):
        super().__init__(vm, name, directory)
        self.digest = digest
        vm.machine.warm_up()
        gc.collect()
        gc.freeze()        # the children share the pool's objects: keep the collector off them

    def serve_forever(self) -> None:
        try:
            while self.directory.is_dir():
                if not select.select([self.listener], [], [], POOL_IDLE)[0]:
                    break
                connection, _ = self.listener.accept()
                with connection:
                    request = self._read_request(connection)
                    if request is not None:
                        self._dispatch(connection, request)
        except StopRequested:
            pass
        finally:
            self._close_listener()
            self.vm.close()
            registry.remove(self.directory)

    def _dispatch(self, connection, request: dict) -> None:
        op = request.get("op")
        if op == "stop":
            self._reply(connection, ok=True)
            raise StopRequested
        if op == "ping":
            self._reply(connection, ok=True, name=self.name, busy=False)
        elif op != "run":
            self._reply(connection, error=f"the run pool does not serve {op!r}",
                        status=EXIT_FAILED)
        elif request.get("digest") != self.digest:
            self._reply(connection, error="stale", status=EXIT_FAILED)
            raise StopRequested
        elif os.fork() == 0:
            self._run_once(connection, request)

    def _serve_while_busy(self) -> bool:
        return self._client_gone()    # nobody wants this VM any more: end it

    def _run_once(self, connection, request) -> None:
        """In the child of a fork: run the request's command; never returns."""
        try:
            self.vm.service = self._serve_while_busy
            self._close_listener()
            self.vm.new_identity(str(request.get("hostname", "hartvm")))
            self.vm.shared.ephemeral = True     # this VM ends with its command: no unmounts
            self.vm.io.realtime = bool(request.get("realtime"))
            network = request.get("network", "none")
            if network != "none":
                self.vm.plug_network(network, _string_list(request.get("publish")))
            self._exec(connection, request)
        except HartvmError as error:
            self._reply(connection, error=str(error),
                        status=EXIT_TIMEOUT if isinstance(error, CommandTimeout) else EXIT_FAILED)
        except Interrupted:
            pass
        except BaseException:  # noqa: BLE001 - the child must never unwind into the pool's loop
            traceback.print_exc()
        finally:
            os._exit(0)


def _string_list(value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise HartvmError("bad request: a list of strings expected")
    return value


def _redirect_output(path: Path) -> None:
    """stdout and stderr of this process to ``path`` (the VM's log)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main() -> int:
    """``python -m hartvm.vmm.server CONFIG-JSON``: started by ``hartvm up``/``restore``.

    The directory is already claimed; the readiness pipe (fd ``ready_fd``)
    gets ``ok`` once the socket listens, or the error that stopped the start.
    """
    config = json.loads(sys.argv[1])
    directory = Path(config["directory"])
    ready_fd = config["ready_fd"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # forks end on their own: no zombies
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        network, publish = config.get("network", "none"), config.get("publish", [])
        if config.get("snapshot"):
            vm = VM.restore(config["snapshot"], hostname=config["hostname"],
                            network=network, publish=publish)
            vm.shared.mount(vm, from_request(config.get("volumes")), keep=True)
        elif config.get("pool") and network != "none":
            # The pool's VM has a network card, unplugged: each child plugs its own.
            vm = VM.restore(booted_snapshot(config["memory"], config["smp"], False,
                                            config.get("image", "busybox"),
                                            config.get("disk_size"), network_card=True),
                            hostname=config["hostname"])
        else:
            vm = VM(memory=config["memory"], smp=config["smp"], drives=config["drives"],
                    hostname=config["hostname"], progress=False,
                    volumes=from_request(config.get("volumes")),
                    image=config.get("image", "busybox"), disk_size=config.get("disk_size"),
                    network=network, publish=publish)
        if config.get("pool"):
            server = PoolServer(vm, directory.name, directory, code_digest())
            server.listen()
        else:
            server = Server(vm, directory.name, directory)
            server.start()
            if config.get("gdb"):
                server.listen_for_gdb(config["gdb"])
    except BaseException as error:  # noqa: BLE001 - reported to the starting hartvm
        message = str(error) if isinstance(error, HartvmError) else repr(error)
        os.write(ready_fd, f"{message}\n".encode())
        traceback.print_exc()
        registry.remove(directory)
        return 1
    os.write(ready_fd, b"ok\n")
    os.close(ready_fd)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)      # everything is cleaned up; skip the interpreter's slow teardown
