"""Fleets: many commands, each in a fresh VM, across the machines of a Ray cluster.

``Fleet(address)`` joins a Ray cluster (``ray.init``) and starts one actor,
``NodeRunner``, on every node that offers CPUs, pinned there by node
affinity. Each actor owns that node's run pools (vmm/client.py's
``RunPool``: the paused guest that forks a fresh VM per command), so a
command on a node costs what ``hartvm run`` costs there. ``map`` and
``imap`` send the commands to the actors and give back a ``Result`` per
command (status, stdout, stderr, the node that ran it) in input order;
``progress`` is called with each result as it arrives, in any order.

Who does what:

- Ray schedules: the actors' threads (``max_concurrency``, the node's CPU
  count) run the commands, and Ray queues the ones that wait. The driver only
  keeps each actor's queue short (twice its threads), so that commands go to
  the nodes that finish theirs first, and it knows which commands each actor
  holds at any time.
- The VMs are hartvm's own processes, not forks of a Ray worker: the actor
  is a client of its run pool, which ``RemoteVM.up`` starts with
  ``subprocess.Popen(start_new_session=True)``, stdin from /dev/null, output
  to the pool's log and ``cwd="/"``: no Ray worker's terminal, signals or
  descriptors. It is still the worker's child, and Ray ends a worker's
  children with it (its ``kill_child_processes_on_worker_exit``), so an
  actor killed any way (the driver's end) takes its pools along instead of
  leaving them to their ten idle minutes; ``Fleet.close`` stops them
  cleanly first.
- Each actor has a state directory of its own
  (``$HARTVM_STATE_DIR/fleet/<node>-XXXX``, set in its process before any
  pool starts), so two actors on one host never share a run pool's name in
  the registry; the cache (``$XDG_CACHE_HOME/hartvm``: Debian packages,
  images, booted snapshots, numba's code) is shared by everything on a
  host, as it is by ``hartvm run``s.
- A node that dies: the actor's calls fail with ``RayActorError`` (or the
  result object is lost with it); each command it held goes back to the
  front of the queue and runs again on another node. A command has one call
  in flight at a time and a result is kept once, so each is reported
  exactly once (``Result.attempts`` says how many nodes it was given to; a
  command a dying node was running may have run there too).

Images reach the nodes through each node's own hartvm cache, not Ray's
object store: ``busybox`` (the default) is fetched through apt and built on a
node's first use, ``debian`` built there on first use, as ``hartvm run
--image`` does; an image of one's own must be built on every node (the
same ``hartvm image build`` on each). Images are hundreds of megabytes that
every node can make itself from Debian's signed packages, and the booted
snapshot behind a run pool is keyed to its node's own files and hartvm's
code, so each node boots its own once anyway; sending them through the
object store would cost more than it saves.
Volumes are host paths on the nodes: the same directory must exist on every
node (a shared filesystem); each actor checks before the first command.

Ray is imported only here and in the actors (``pip install 'hartvm[fleet]'``);
without it a ``Fleet`` is a one-line ``HartvmError``.
"""

import collections
import dataclasses
import logging
import os
import re
import socket
import tempfile
from pathlib import Path

from .. import exit_status, paths
from ..errors import HartvmError, shown
from ..limits import check_harts, guest_memory_size
from ..vmm import registry
from ..vmm.arguments import check_timeout
from ..vmm.client import RemoteVM, RunPool
from ..vmm.results import CommandTimeout
from ..vmm.volumes import parse_volumes

CONNECT_TIMEOUT = 5       # seconds to reach a HOST:PORT address before ray.init is tried
CLOSE_TIMEOUT = 60        # seconds the actors may take to stop their run pools
QUEUE_PER_THREAD = 2      # commands given to an actor per thread of it, at most


@dataclasses.dataclass(frozen=True)
class Result:
    """What a command gave: ``returncode`` (124 on ``timeout``, 125 when hartvm
    or the guest failed, with the reason on ``stderr``), ``stdout`` and
    ``stderr`` (bytes), the Ray ``node`` id of the machine that ran it, and
    ``attempts``: 1, or more when nodes died while they held it."""
    index: int
    command: str | list
    returncode: int
    stdout: bytes
    stderr: bytes
    node: str
    attempts: int


class NodeRunner:
    """The Ray actor of one node: runs commands in fresh VMs of its run pools.
    Its methods run in ``max_concurrency`` threads; ``RunPool`` holds no
    connection, so they share it safely."""

    def __init__(self):
        import ray
        self.node = ray.get_runtime_context().get_node_id()
        base = paths.state_home() / "fleet"
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Short: the pools' control sockets live under it (107 bytes at most).
        self.state = tempfile.mkdtemp(prefix=f"{self.node[:8]}-", dir=base)
        os.environ["HARTVM_STATE_DIR"] = self.state    # this worker process is the actor's alone
        self.pools = {}

    def _pool(self, image: str, memory: int, smp: int) -> RunPool:
        key = (image, memory, smp)
        if key not in self.pools:
            self.pools[key] = RunPool(memory, smp, progress=False, image=image)
        return self.pools[key]

    def prepare(self, image: str, memory: int, smp: int, volumes: list) -> str:
        """Check the volumes here and start the run pool (fetching or building
        the image first if this node never had it); the node's id."""
        parse_volumes(volumes)
        self._pool(image, memory, smp).ping()
        return self.node

    def run(self, command, image: str, memory: int, smp: int, volumes: list,
            timeout: float | None) -> tuple[str, int, bytes, bytes]:
        """(node, status, stdout, stderr) of ``command`` in a fresh VM."""
        try:
            result = self._pool(image, memory, smp).run(command, timeout=timeout,
                                                        volumes=volumes or None)
        except CommandTimeout as error:
            return (self.node, exit_status.TIMEOUT, error.stdout or b"",
                    (error.stderr or b"") + f"hartvm: {error}\n".encode())
        except HartvmError as error:
            return self.node, exit_status.GUEST_FAILED, b"", f"hartvm: {error}\n".encode()
        return self.node, result.returncode, result.stdout, result.stderr

    def close(self) -> None:
        """Stop this actor's run pools and remove its state directory."""
        for info in registry.list_vms():
            RemoteVM(info.name).stop()
        for directory in (Path(self.state) / "vms", Path(self.state)):
            try:
                directory.rmdir()
            except OSError:
                pass       # something still in it: left for the user to see


class _Member:
    """The driver's view of one actor: what it holds now, and whether it lives."""

    def __init__(self, actor, node: str, threads: int):
        self.actor, self.node, self.threads = actor, node, threads
        self.held = 0
        self.alive = True


def _ray():
    try:
        import ray
    except ImportError as error:
        raise HartvmError(f"fleets need Ray ({error}): pip install 'hartvm[fleet]'") from None
    return ray


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return shown(text.splitlines()[0])


def _check_reachable(address: str) -> None:
    """A HOST:PORT address whose port does not answer fails here, at once:
    ``ray.init`` would wait for it for minutes."""
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d+)", address)
    if match is None:
        return               # "auto", "ray://...": ray.init's own
    try:
        socket.create_connection((match[1], int(match[2])), timeout=CONNECT_TIMEOUT).close()
    except (OSError, ValueError) as error:
        raise HartvmError(f"cannot reach the Ray cluster at {shown(address)}: "
                          f"{getattr(error, 'strerror', None) or error}") from None


def _checked_command(command):
    if isinstance(command, str) and command.strip():
        return command
    if isinstance(command, (list, tuple)) and command and \
            all(isinstance(word, str) for word in command):
        return list(command)
    raise HartvmError(f"bad command {shown(command)}: a shell command (str) or an argv "
                      f"list of str expected")


class Fleet:
    """The run pools of every node of a Ray cluster. Use as a context manager,
    or call ``close()``.

    ``address``: as ``ray.init`` takes it ("HOST:PORT" of the head's GCS,
    "auto" for the cluster this machine is part of; None: Ray's default,
    ``$RAY_ADDRESS``, else the cluster of this machine, else a new one of this
    machine alone), ignored if
    Ray is initialized already (then the caller's ``ray.init`` stands, and
    ``close`` leaves it). ``runtime_env``: for ``ray.init`` (e.g. the
    environment variables of the actors). Nodes without CPUs (a head started
    with ``--num-cpus 0``) run no commands."""

    def __init__(self, address: str | None = None, runtime_env: dict | None = None):
        ray = _ray()
        self._joined = not ray.is_initialized()
        if self._joined:
            if address is not None:
                _check_reachable(address)
            try:
                ray.init(address=address, runtime_env=runtime_env,
                         logging_level=logging.ERROR, log_to_driver=False)
            except Exception as error:  # noqa: BLE001 - Ray's errors have no common base
                raise HartvmError(f"cannot join the Ray cluster at {shown(address or 'auto')}: "
                                  f"{_first_line(error)}") from None
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        runner = ray.remote(NodeRunner)
        self._members = []
        for node in ray.nodes():
            threads = int(node["Resources"].get("CPU", 0)) if node["Alive"] else 0
            if threads:
                # num_cpus=0: the actor only waits on its VMs, which run outside
                # Ray's accounting; asking for CPUs could keep it from ever starting
                # on a busy cluster. Its threads are what bounds the node's VMs.
                actor = runner.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
                    num_cpus=0, max_concurrency=threads, max_restarts=0).remote()
                self._members.append(_Member(actor, node["NodeID"], threads))
        if not self._members:
            self.close()
            raise HartvmError("the Ray cluster has no node with CPUs to run commands on")

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the actors' run pools, end the actors (and leave Ray if
        ``Fleet`` joined it)."""
        ray = _ray()
        calls = [member.actor.close.remote() for member in self._members if member.alive]
        try:
            if calls:
                ray.wait(calls, num_returns=len(calls), timeout=CLOSE_TIMEOUT)
        finally:
            for member in self._members:
                ray.kill(member.actor)
            self._members = []
            if self._joined:
                ray.shutdown()

    def map(self, commands, image: str = "busybox", volumes=(), timeout: float | None = None,
            memory="256M", smp: int = 1, progress=None) -> list[Result]:
        """Every command's ``Result``, in the order of ``commands``; see ``imap``."""
        return list(self.imap(commands, image=image, volumes=volumes, timeout=timeout,
                              memory=memory, smp=smp, progress=progress))

    def imap(self, commands, image: str = "busybox", volumes=(), timeout: float | None = None,
             memory="256M", smp: int = 1, progress=None):
        """Run each of ``commands`` (a str for ``sh -c``, or an argv list) in a
        fresh VM of ``image`` with ``memory`` and ``smp`` harts, the host
        directories ``volumes`` ("HOST_DIR:GUEST_DIR[:ro]", on every node) shared
        and ``timeout`` seconds each; yield their ``Result``s in the order of
        ``commands``, each as soon as it and those before it are in.
        ``progress(result)`` is called for each as it comes, in any order."""
        ray = _ray()
        from ray.exceptions import ObjectLostError, RayActorError, RayTaskError
        commands = [_checked_command(command) for command in commands]
        memory = guest_memory_size(memory)
        check_harts(smp)
        check_timeout(timeout)
        # Checked by each node (prepare): the host directories are the nodes', not ours.
        volumes = [volumes] if isinstance(volumes, str) else list(volumes or ())
        options = dict(image=image, memory=memory, smp=smp, volumes=volumes)
        self._prepare(options)
        pending = collections.deque(range(len(commands)))
        attempts = [0] * len(commands)
        held = {}              # the call in flight -> (its member, its command's index)
        done = {}              # index -> Result, until yielded
        following = 0          # the next index to yield
        while following < len(commands):
            for member in self._members:
                while member.alive and pending and \
                        member.held < member.threads * QUEUE_PER_THREAD:
                    index = pending.popleft()
                    attempts[index] += 1
                    call = member.actor.run.remote(commands[index], timeout=timeout, **options)
                    held[call] = member, index
                    member.held += 1
            if not held:
                raise HartvmError(f"every node of the fleet died; {len(pending)} commands "
                                  f"did not run")
            [call], _ = ray.wait(list(held), num_returns=1)
            member, index = held.pop(call)
            member.held -= 1
            try:
                node, status, stdout, stderr = ray.get(call)
            except (RayActorError, ObjectLostError):
                # The node (or its actor) is gone: whatever it held runs elsewhere.
                # Killing it makes sure a merely unreachable one runs no more.
                if member.alive:
                    member.alive = False
                    ray.kill(member.actor)
                pending.appendleft(index)
                continue
            except RayTaskError as error:      # a hartvm bug in the actor: this command's failure
                node, status, stdout = member.node, exit_status.GUEST_FAILED, b""
                stderr = f"hartvm: {_first_line(error.cause)}\n".encode()
            done[index] = Result(index, commands[index], status, stdout, stderr, node,
                                 attempts[index])
            if progress is not None:
                progress(done[index])
            while following in done:
                yield done.pop(following)
                following += 1

    def _prepare(self, options: dict) -> None:
        """Every live actor checks the volumes and starts its run pool; a node
        that dies meanwhile is left out, one that refuses is an error."""
        ray = _ray()
        from ray.exceptions import RayActorError, RayTaskError
        members = [member for member in self._members if member.alive]
        calls = [member.actor.prepare.remote(**options) for member in members]
        for member, call in zip(members, calls):
            try:
                ray.get(call)
            except RayActorError:
                member.alive = False
            except RayTaskError as error:
                cause = error.cause if isinstance(error.cause, HartvmError) else error
                raise HartvmError(f"a node of the fleet: {_first_line(cause)}") from None
        if not any(member.alive for member in self._members):
            raise HartvmError("every node of the fleet died")


def map(commands, address: str | None = None, image: str = "busybox", volumes=(),
        timeout: float | None = None, memory="256M", smp: int = 1, progress=None,
        runtime_env: dict | None = None) -> list[Result]:
    """``Fleet(address, runtime_env).map(commands, ...)``, the fleet closed after."""
    with Fleet(address, runtime_env=runtime_env) as fleet:
        return fleet.map(commands, image=image, volumes=volumes, timeout=timeout,
                         memory=memory, smp=smp, progress=progress)
