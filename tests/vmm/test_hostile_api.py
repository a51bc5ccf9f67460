"""Generated hostile input for the Python API (issue 16): every public function's
every parameter, found by ``inspect.signature``, given each value of a table
of wrong types and edge values while the other arguments stay valid.

Each case must end, within TIME_LIMIT seconds, either in a refusal (a
``HartvmError``, ``TypeError`` or ``ValueError`` with a one-line message; an
exception raised by the suite's own hostile callable, passed on as it is, is
fine too) or in a call that worked. Either way what it was called on must
still work afterwards (the VM runs ``true``), the host's descriptors it was
given are left open, and nothing is left behind (VM directories, file
descriptors). Never a hang, never an exception of another type.

One in-process VM serves the VM's methods (a broken one is replaced, so that
one bug does not fail the cases after it); a VM process serves the methods
of ``RemoteVM`` that reach the server; the others are called on a VM that
does not exist. Constructors are given only what they should refuse before
they build anything (their flags are left out). What starts or asks a VM
process takes one value of each kind (ONE_OF_EACH), the rest every value.
The last test checks the counts of outcomes (``pytest -s`` prints them, and
a line per case that went wrong). About three minutes; each hang adds
TIME_LIMIT.
"""

import gc
import inspect
import math
import os
import shutil
import signal
import stat
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import hartvm

TIME_LIMIT = 10          # seconds a call (and the check after it) may take: five times the slowest
UP_TIME_LIMIT = 60       # ... one that starts a VM process (2 s; more on a loaded machine)
ABSENT = "no-such-vm"    # a RemoteVM that does not exist
LIVE = "hostile-live"    # the suite's VM process
GUEST_FILE = "/tmp/hostile-get"


class Boom(Exception):
    """Raised by the suite's own hostile callable: passing it on is right."""


def _boom(*args, **kwargs):
    raise Boom("the hostile callable raised")


def _open_fd(case):
    """A host file descriptor of the case's own (an empty regular file)."""
    fd = os.open(case.out / "fd-file", os.O_RDWR | os.O_CREAT, 0o600)
    case.fds.append(fd)
    return fd


# Wrong types and edge values: (label, factory(case)); factories make fresh
# values (descriptors, paths) for each case.
HOSTILE = [
    ("None", lambda case: None),
    ("0", lambda case: 0),
    ("-1", lambda case: -1),
    ("2**70", lambda case: 2 ** 70),
    ("True", lambda case: True),
    ("1e-9", lambda case: 1e-9),
    ("nan", lambda case: math.nan),
    ("inf", lambda case: math.inf),
    ("''", lambda case: ""),
    ("'a\\0b'", lambda case: "a\0b"),
    ("'\\n'", lambda case: "\n"),
    ("surrogate", lambda case: "\udcff"),
    ("'x'*300", lambda case: "x" * 300),       # longer than any name (255 for a file)
    ("'../..'", lambda case: "../.."),
    ("b''", lambda case: b""),
    ("b'a\\0b'", lambda case: b"a\0b"),
    ("bytearray", lambda case: bytearray(b"abc")),
    ("[]", lambda case: []),
    ("[None]", lambda case: [None]),
    ("{'a': 1}", lambda case: {"a": 1}),
    ("object()", lambda case: object()),
    ("callable", lambda case: lambda *args, **kwargs: None),
    ("raising callable", lambda case: _boom),
    ("missing PathLike", lambda case: Path("/nonexistent/hartvm-hostile")),
    ("open fd", _open_fd),
]


def _quiet(data):
    pass


def _terminal(case):
    """A terminal for ``shell`` that types ``exit`` and ends."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"exit\n")
    os.close(write_fd)
    case.fds.append(read_fd)
    return read_fd


@dataclass
class Target:
    """A public function: ``name``, ``where`` it is called (see ``_callee``), the
    function its signature is read from, the valid arguments (factories), the
    parameters left out with why."""
    name: str
    where: str
    function: object
    baseline: dict = field(default_factory=dict)
    skip: dict = field(default_factory=dict)
    values: tuple = ()          # the labels of HOSTILE it takes (all if empty)

    def parameters(self) -> list[str]:
        params = list(inspect.signature(self.function).parameters.values())
        if params and params[0].name in ("self", "cls"):
            params = params[1:]
        return [p.name for p in params
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


# Valid arguments, shared by VM and RemoteVM (one API).
BASELINE = {
    # A command that writes to both streams: their callables are called.
    "run": {"args": lambda case: ["sh", "-c", "echo out; echo err >&2"]},
    "put_file": {"source": lambda case: b"hostile\n",
                 "guest_path": lambda case: "/tmp/hostile-put"},
    "get_file": {"guest_path": lambda case: GUEST_FILE},
    "copy_to_guest": {"source": lambda case: str(case.world.host_file),
                      "guest_path": lambda case: "/tmp/hostile-cp"},
    "copy_from_guest": {"guest_path": lambda case: GUEST_FILE,
                        "destination": lambda case: case.out / "copy"},
    "snapshot": {"path": lambda case: case.out / "snapshot"},
    "fork": {},
    "plug_network": {"mode": lambda case: "none"},
    "shell": {"terminal_fd": _terminal, "output": lambda case: _quiet},
    "terminal": {},
    "new_identity": {"hostname": lambda case: "hostile"},
    "apply_identity": {},
    "cancel": {},
    "info": {}, "ping": {}, "stop": {},
}
FILE_METHODS = ["put_file", "get_file", "copy_to_guest", "copy_from_guest"]
FLAG = "a flag: any value is taken for its truth, as Python does"
UP_BASELINE = {"progress": lambda case: False}
UP_SKIP = {"progress": FLAG, "pool": FLAG + " (a true one starts a run pool)"}
# What starts a VM process, or asks one, takes one value of each kind: a value
# that the client lets through and the VM process refuses costs a process
# start (2 s), and the client's own checks are the VM's (all values, above).
ONE_OF_EACH = ("None", "-1", "2**70", "nan", "''", "'a\\0b'", "'\\n'", "b''", "[None]",
               "{'a': 1}", "object()", "raising callable", "missing PathLike")
# VM.up checks the image (and builds it) unless it restores a snapshot, then
# hands every argument unchanged to RemoteVM.up, whose cases cover them.
VM_UP_SKIP = {name: "handed unchanged to RemoteVM.up" for name in
              inspect.signature(hartvm.VM.up).parameters if name not in ("image", "snapshot")}
# A constructor takes its flags as any other call does, and a VM built for each
# of them would be no test of refusing: they are left out.
VM_SKIP = {"boot": FLAG + " (a true one boots the guest: half a minute)", "progress": FLAG,
           "realtime": FLAG}

TARGETS = [
    Target("VM", "class", hartvm.VM, {"progress": lambda case: False}, VM_SKIP),
    Target("VM.restore", "class", hartvm.VM.restore, {"path": lambda case: case.world.snapshot},
           {"realtime": FLAG}),
    Target("VM.up", "up", hartvm.VM.up, UP_BASELINE, VM_UP_SKIP, ONE_OF_EACH),
    *[Target(f"VM.{name}", "vm", getattr(hartvm.VM, name), BASELINE[name])
      for name in ["run", *FILE_METHODS, "snapshot", "fork", "plug_network", "shell",
                   "new_identity", "apply_identity", "cancel"]],
    Target("RemoteVM", "class", hartvm.RemoteVM, {"name": lambda case: ABSENT}),
    Target("RemoteVM.up", "up", hartvm.RemoteVM.up, UP_BASELINE, UP_SKIP, ONE_OF_EACH),
    Target("RemoteVM.restore", "up", hartvm.RemoteVM.restore,
           {"path": lambda case: case.world.snapshot}, values=ONE_OF_EACH),
    *[Target(f"RemoteVM.{name}", "absent", getattr(hartvm.RemoteVM, name), BASELINE[name])
      for name in ["run", *FILE_METHODS, "snapshot", "fork", "shell", "terminal", "info", "ping",
                   "stop"]],
    # What the client sends to a VM process, and what that process does with it
    # (the file methods are the client's own code, above, then a run).
    *[Target(f"RemoteVM.{name} (running)", "live", getattr(hartvm.RemoteVM, name),
             BASELINE[name], values=ONE_OF_EACH)
      for name in ["run", "snapshot", "fork", "shell"]],
    Target("list_vms", "class", hartvm.list_vms),
    Target("Machine", "class", hartvm.Machine,
           {"memory_size": lambda case: 16 << 20,
            "io": lambda case: hartvm.HostIO(output=_quiet)}),
    Target("Machine.load_kernel", "machine", hartvm.Machine.load_kernel,
           {"path": lambda case: str(case.world.guest.firmware)}),
    Target("Machine.boot", "machine", hartvm.Machine.boot,
           {"kernel": lambda case: str(case.world.guest.kernel),
            "firmware": lambda case: str(case.world.guest.firmware)}),
    Target("Machine.run", "machine", hartvm.Machine.run,
           {"until": lambda case: lambda: True, "max_instructions": lambda case: 1000}),
    Target("Machine.hook_code", "machine", hartvm.Machine.hook_code,
           {"address": lambda case: 0x80000000, "fn": lambda case: print}),
    Target("Machine.hook_memory", "machine", hartvm.Machine.hook_memory,
           {"start": lambda case: 0x80000000, "end": lambda case: 0x80001000,
            "fn": lambda case: print}),
    Target("Machine.hook_trap", "machine", hartvm.Machine.hook_trap, {"fn": lambda case: print}),
    Target("HostIO", "class", hartvm.HostIO, {"output": lambda case: _quiet}),
]

# Public functions of VM and RemoteVM that no target calls, and why.
NOT_CALLED = {
    "VM.close": "would end the suite's VM: test_a_closed_vm_refuses_every_call covers it",
    "VM.idle": "runs the guest until until() is true: a callable that never is runs forever",
    "VM.freeze_drives": "fork plumbing: does nothing on a VM without drives",
    "VM.clone_drives": "fork plumbing: does nothing on a VM without drives",
}
# RemoteVM's methods on the suite's VM process: run, snapshot, fork, shell (what the
# process is asked); not stop (it would end it), nor the file methods (the
# client's own code, covered on an absent VM, and then a run).
UNKNOWN = "unknown keyword"
# Hostile values that are valid for a parameter, and costly: a descriptor's
# number (10 to 30) is a valid hart count, whose first VM boots a guest and
# caches its snapshot (a minute), and a valid fork count (as many VM processes).
VALID_BUT_COSTLY = {("smp", "open fd"), ("count", "open fd")}


def _cases():
    for target in TARGETS:
        parameters = target.parameters()
        missing = [p for p in parameters if p not in target.baseline and
                   inspect.signature(target.function).parameters[p].default is inspect._empty]
        assert not missing, f"{target.name}: no valid value for {missing}"
        if not parameters:
            yield pytest.param(target, None, None, id=f"{target.name}()")
        signature = inspect.signature(target.function).parameters
        for parameter in parameters:
            if parameter in target.skip:
                continue
            for label, _ in HOSTILE:
                if target.values and label not in target.values or \
                        (parameter, label) in VALID_BUT_COSTLY or \
                        label == "None" and signature[parameter].default is None:
                    continue        # not hostile: the default
                yield pytest.param(target, parameter, label,
                                   id=f"{target.name} {parameter}={label}")
        yield pytest.param(target, UNKNOWN, None, id=f"{target.name} {UNKNOWN}")


CASES = list(_cases())
OUTCOMES = Counter()          # outcome -> cases
PROBLEMS = []                 # one line per case that went wrong
HOSTILE_FACTORIES = dict(HOSTILE)


# --- the world the cases run in ------------------------------------------------------

class World:
    """The suite's VM (replaced when a case breaks it), its VM process, a snapshot
    to restore, a host file to copy, and the working directory hostile relative
    paths land in (three levels below the suite's directory, so that "../.." is
    the suite's, never a real one)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.cwd = directory / "a" / "b" / "c"
        self.cwd.mkdir(parents=True)
        self.host_file = directory / "host-file"
        self.host_file.write_bytes(b"host file\n")
        self.vm = None
        self.remote = None
        self.snapshot = directory / "snapshot"
        with hartvm.VM(progress=False) as vm:
            vm.put_file(b"hostile\n", GUEST_FILE)
            vm.snapshot(self.snapshot)
        self.new_vm()
        self.live()
        from hartvm.guest import debian
        self.guest = debian.default_guest(progress=False)

    def new_vm(self) -> None:
        if self.vm is not None:
            try:
                self.vm.close()
            except Exception:
                pass
        self.vm = hartvm.VM.restore(self.snapshot)      # in milliseconds, with GUEST_FILE

    def live(self) -> hartvm.RemoteVM:
        if self.remote is None:
            self.remote = hartvm.VM.up(name=LIVE, progress=False)
            self.remote.put_file(b"hostile\n", GUEST_FILE)
        return self.remote

    def new_live(self) -> None:
        try:
            hartvm.RemoteVM(LIVE).stop()
        except Exception:
            pass
        self.remote = None

    def clean(self) -> None:
        """Empty the suite's working directories (what worked cases wrote there)."""
        keep = {self.directory / "a": "b", self.directory / "a" / "b": "c", self.cwd: None}
        for directory, kept in keep.items():
            for entry in directory.iterdir():
                if entry.name != kept:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()


@pytest.fixture(scope="module")
def world(tmp_path_factory, state_dir):
    directory = tmp_path_factory.mktemp("hostile-api")
    old_cwd = os.getcwd()
    # Fd 0 is /dev/null for the suite: a hostile 0 read as a descriptor must not
    # wait for a person at the terminal (pytest -s).
    saved_stdin = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    world = None
    try:
        world = World(directory)
        os.chdir(world.cwd)
        yield world
    finally:
        os.chdir(old_cwd)
        os.dup2(saved_stdin, 0)
        os.close(saved_stdin)
        if world is not None and world.vm is not None:
            world.vm.close()          # (the VM process goes with state_dir)


class Hung(BaseException):
    """The time bound passed (a BaseException: hartvm's handlers let it through)."""


@contextmanager
def time_bound(seconds: float):
    def alarm(signum, frame):
        raise Hung(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Case:
    world: World
    out: Path
    fds: list = field(default_factory=list)
    machine: object = None


def _callee(target: Target, case: Case):
    where, world = target.where, case.world
    method = target.name.split(".")[-1].split(" ")[0]
    if where in ("class", "up"):
        return target.function
    if where == "vm":
        return getattr(world.vm, method)
    if where == "live":
        return getattr(world.live(), method)
    if where == "absent":
        return getattr(hartvm.RemoteVM(ABSENT), method)
    if where == "machine":
        memory = 256 << 20 if method == "boot" else 16 << 20
        case.machine = hartvm.Machine(memory_size=memory, io=hartvm.HostIO(output=_quiet))
        return getattr(case.machine, method)
    raise AssertionError(where)


def _describe(error: BaseException) -> str:
    tail = traceback.format_exception(type(error), error, error.__traceback__)
    frames = [line.strip().splitlines()[0] for line in tail[1:-1]][-3:]
    return f"{type(error).__name__}: {str(error)[:300]!r} at {' <- '.join(reversed(frames))}"


def _classify(error: BaseException) -> str:
    if isinstance(error, Hung):
        return "hung"
    if isinstance(error, Boom):
        return "passed on"
    if isinstance(error, (hartvm.HartvmError, TypeError, ValueError)):
        message = str(error).strip()
        return "refused" if message and "\n" not in message else "unclear message"
    return "unexpected exception"


def _fd_identity(fd: int):
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_dev, info.st_ino, stat.S_IFMT(info.st_mode)


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def _leaked(before: set[int], given) -> set[int]:
    return {fd for fd in _open_fds() - before - set(given) if _fd_identity(fd) is not None}


def _vms_dir() -> Path:
    from hartvm.vmm import registry
    return registry.vms_dir()


def _vm_directories() -> set[str]:
    vms = _vms_dir()
    return (set(os.listdir(vms)) if vms.is_dir() else set()) - {LIVE}


def _check_worked(target: Target, case: Case, result) -> str | None:
    """What a call that worked gave back still works (and is closed): None, or why not."""
    values = result if isinstance(result, list) else [result]
    problem = None
    for value in values:
        try:
            with time_bound(TIME_LIMIT):
                if isinstance(value, hartvm.VM):
                    try:
                        if value.run(["true"]).returncode != 0:
                            problem = problem or "the VM it gave runs `true` with a failure"
                    finally:
                        value.close()
                elif isinstance(value, hartvm.RemoteVM) and target.where != "class":
                    try:
                        if value.run(["true"]).returncode != 0:
                            problem = problem or "the VM it gave runs `true` with a failure"
                    finally:
                        value.stop()
                elif isinstance(value, (hartvm.Machine, hartvm.HostIO)):
                    _use_machine_level(value)
        except BaseException as error:
            if isinstance(value, (hartvm.Machine, hartvm.HostIO)) and \
                    _classify(error) in ("refused", "passed on"):
                OUTCOMES["refused on use"] += 1
                continue
            problem = problem or f"what it gave does not work: {_describe(error)}"
    return problem


def _use_machine_level(value) -> None:
    """Use a Machine or HostIO that was built. These take their callables (``output``,
    ``flush``) as Python takes duck-typed arguments: a wrong one may be refused
    when it is first used, with a TypeError; any other exception is a bug."""
    if isinstance(value, hartvm.Machine):
        value.run(max_instructions=1000)
    else:
        value.console_write(b"x")
        value.flush()
        value.poll(0)


def _between_commands(vm: hartvm.VM) -> bool:
    """The VM is open and its guest agent waits for a command (what ``run`` needs)."""
    return not vm.closed and vm.agent.ready and not vm.agent.busy


def _check_callee(target: Target, case: Case, outcome: str) -> str | None:
    """What the call was made on still works: None, or why not (then it is replaced).
    After a refusal (most cases) it is asked whether it is ready for a command;
    after anything else it runs one."""
    world = case.world
    try:
        with time_bound(TIME_LIMIT):
            if target.where == "vm" and outcome == "refused":
                if not _between_commands(world.vm):
                    raise AssertionError("the VM is not ready for a command")
                status = 0
            elif target.where == "vm":
                status = world.vm.run(["true"]).returncode
            elif target.where == "live" and outcome == "refused":
                status = 0 if world.live().ping().get("ok") else 1
            elif target.where == "live":
                status = world.live().run(["true"]).returncode
            elif target.where == "machine":
                try:
                    case.machine.run(max_instructions=1000)
                except Boom:
                    pass      # a hook given the raising callable: it reaches run's caller
                status = 0
            else:
                return None
        if status == 0:
            return None
        problem = f"then `true` exited with {status}"
    except BaseException as error:
        problem = f"then it no longer works: {_describe(error)}"
    if target.where == "vm":
        world.new_vm()
    elif target.where == "live":
        world.new_live()
    return problem


def _call(target: Target, case: Case, kwargs: dict) -> tuple[str, list[str]]:
    """Make the call within the time bound: its outcome and what went wrong. What it
    gave back is checked and closed here, and not kept."""
    started = time.monotonic()
    limit = UP_TIME_LIMIT if target.where == "up" else TIME_LIMIT
    try:
        callee = _callee(target, case)
        with time_bound(limit):
            result = callee(**kwargs)
    except BaseException as error:
        outcome = _classify(error)
        problems = [] if outcome in ("refused", "passed on") else \
            [f"{outcome}: {_describe(error)}"]
    else:
        outcome = "worked"
        problem = _check_worked(target, case, result)
        problems = [problem] if problem else []
    elapsed = time.monotonic() - started
    if elapsed > limit + TIME_LIMIT and outcome != "hung":      # (the call, and the check)
        outcome = "hung"
        problems.append(f"took {elapsed:.1f} s")
    return outcome, problems


def _check_descriptors(saved_std: dict, std_identity: dict, given: dict) -> list[str]:
    """The descriptors the case gave (0, 1, 2 and its own) are as they were: the
    call did not close them (a closed one of 0, 1, 2 is put back)."""
    problems = []
    for fd, copy in saved_std.items():
        if _fd_identity(fd) != std_identity[fd]:
            problems.append(f"closed or replaced the host's fd {fd}")
            os.dup2(copy, fd)
        os.close(copy)
    for fd, identity in given.items():
        if _fd_identity(fd) != identity:
            problems.append(f"closed fd {fd}, which the caller owns")
        else:
            os.close(fd)
    return problems


@pytest.mark.parametrize("target, parameter, label", CASES)
def test_hostile_argument_is_refused_or_works(world, target, parameter, label, tmp_path):
    case = Case(world, tmp_path)
    saved_std = {fd: os.dup(fd) for fd in (0, 1, 2)}
    std_identity = {fd: _fd_identity(copy) for fd, copy in saved_std.items()}
    directories_before = _vm_directories()
    kwargs = {name: make(case) for name, make in target.baseline.items()}
    if parameter == UNKNOWN:
        kwargs["no_such_option"] = 1
    elif parameter is not None:
        kwargs[parameter] = HOSTILE_FACTORIES[label](case)
    given_fds = {fd: _fd_identity(fd) for fd in case.fds}
    call = f"{target.name}({', '.join(f'{k}={repr(v)[:40]}' for k, v in kwargs.items())})"
    fds_before = _open_fds()
    outcome, problems = _call(target, case, kwargs)
    kwargs.clear()

    unusable = _check_callee(target, case, outcome)   # (then replaced: new descriptors)
    if unusable:
        problems.append(unusable)
        OUTCOMES["left unusable"] += 1
    case.machine = None
    fd_problems = _check_descriptors(saved_std, std_identity, given_fds)
    OUTCOMES["closed a host fd"] += len(fd_problems)
    problems += fd_problems
    leaked = set() if unusable else _leaked(fds_before, given_fds)
    if leaked:
        gc.collect()          # a closed VM's RAM mapping (and its fd) goes with a cycle
        leaked = _leaked(fds_before, given_fds)
    if leaked:
        problems.append(f"left {len(leaked)} descriptors open: "
                        f"{sorted(os.readlink(f'/proc/self/fd/{fd}') for fd in leaked)}")
        OUTCOMES["leaked fds"] += 1
        for fd in leaked:
            os.close(fd)
    left = _vm_directories() - directories_before
    if left:
        problems.append(f"left VM directories behind: {sorted(left)}")
        OUTCOMES["left VM directories"] += 1
        for name in left:
            try:
                hartvm.RemoteVM(name).stop()
            except hartvm.HartvmError:
                shutil.rmtree(os.path.join(_vms_dir(), name), ignore_errors=True)
    world.clean()
    shutil.rmtree(tmp_path, ignore_errors=True)     # a worked snapshot is large
    OUTCOMES["tried"] += 1
    OUTCOMES[outcome] += 1
    if problems:
        PROBLEMS.append(f"{target.name} {parameter}={label}: {'; '.join(problems)}")
    if problems:                 # the case's own lines, not this function's source
        pytest.fail(f"{call} -> {outcome}:\n" + "\n".join(problems), pytrace=False)


# --- the whole API, and the counts ------------------------------------------------------

def test_every_public_function_is_called_or_said_why_not():
    called = {target.name for target in TARGETS}
    for cls in (hartvm.VM, hartvm.RemoteVM):
        for name, member in inspect.getmembers(cls):
            if name.startswith("_") or isinstance(inspect.getattr_static(cls, name), property):
                continue
            if callable(member):
                full = f"{cls.__name__}.{name}"
                assert full in called or full in NOT_CALLED, f"{full} is not in the suite"
    for name in hartvm.__all__:
        value = getattr(hartvm, name)
        if inspect.isfunction(value):
            assert name in called, f"hartvm.{name} is not in the suite"
    assert len(CASES) >= 1000


def test_a_closed_vm_refuses_every_call(world, tmp_path):
    vm = hartvm.VM.restore(world.snapshot)
    vm.close()
    vm.close()                                      # twice is fine
    case = Case(world, tmp_path)
    for name in ["run", *FILE_METHODS, "snapshot", "fork", "plug_network", "shell"]:
        kwargs = {key: make(case) for key, make in BASELINE[name].items()}
        with pytest.raises(hartvm.HartvmError, match="closed"):
            with time_bound(TIME_LIMIT):
                getattr(vm, name)(**kwargs)
    for fd in case.fds:
        os.close(fd)
    world.clean()


def test_the_counts_are_sane():
    summary = ", ".join(f"{name} {count}" for name, count in sorted(OUTCOMES.items()))
    print(f"\nhostile API cases: {summary}")
    for line in PROBLEMS:
        print(f"  {line[:400]}")
    if OUTCOMES["tried"] < len(CASES):
        pytest.skip(f"only {OUTCOMES['tried']} of {len(CASES)} cases ran: {summary}")
    assert OUTCOMES["tried"] >= 1000, summary
    assert OUTCOMES["refused"] >= OUTCOMES["tried"] // 2, summary
    bad = {name: OUTCOMES[name] for name in
           ("hung", "unexpected exception", "unclear message", "left unusable",
            "closed a host fd", "leaked fds", "left VM directories")}
    assert not any(bad.values()), f"{summary}; bad: {bad}; see the failed cases"
