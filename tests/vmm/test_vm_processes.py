"""Long-running VMs: each in its own process, driven through its control socket.

The tests use a private state directory (``HARTVM_STATE_DIR``), so they see
only their own VMs; the VM processes inherit it.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import hartvm
from hartvm.vmm.client import RemoteVM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


pytestmark = pytest.mark.usefixtures("state_dir")


@pytest.fixture(scope="module")
def base():
    vm = hartvm.VM.up(name="base", progress=False)
    yield vm
    vm.stop()


def hartvm_cli(*args, input=None):
    return subprocess.run([sys.executable, "-m", "hartvm", *args], capture_output=True,
                          cwd=ROOT, input=input, timeout=300,
                          stdin=None if input is not None else subprocess.DEVNULL)


def test_exec_has_the_semantics_of_run(base):
    result = base.run(["sh", "-c", "cat; echo err >&2; echo $X $PWD; exit 7"], input=b"in\n",
                      env={"X": "y"}, cwd="/tmp")
    assert (result.returncode, result.stdout, result.stderr) == (7, b"in\ny /tmp\n", b"err\n")
    assert base.run(["no-such-command"]).returncode == 127
    assert base.run(["hostname"]).stdout == b"base\n"


def test_the_cli_commands(base, tmp_path):
    up = hartvm_cli("up", "--name", "cli", "--memory", "128M")
    assert (up.returncode, up.stdout, up.stderr) == (0, b"cli\n", b"")
    again = hartvm_cli("up", "--name", "cli")
    assert again.returncode == 1 and b"exists already" in again.stderr
    run = hartvm_cli("exec", "-e", "A=1", "cli", "--", "sh", "-c", "cat; echo $A; exit 3",
                     input=b"piped\n")
    assert (run.returncode, run.stdout) == (3, b"piped\n1\n")
    ps = hartvm_cli("ps").stdout.decode().splitlines()
    assert ps[0].split() == ["NAME", "STATE", "PID", "MEMORY", "PRIVATE", "SHARED", "UPTIME",
                             "PARENT"]
    row = next(line.split() for line in ps if line.startswith("cli "))
    assert row[1:2] == ["running"] and row[3] == "128.0M" and int(row[2]) > 0
    snapshot = hartvm_cli("snapshot", "cli", str(tmp_path / "snap"))
    assert snapshot.returncode == 0, snapshot.stderr
    restore = hartvm_cli("restore", str(tmp_path / "snap"), "--name", "cli-restored")
    assert restore.stdout == b"cli-restored\n", restore.stderr
    assert hartvm_cli("exec", "cli-restored", "--", "hostname").stdout == b"cli-restored\n"
    fork = hartvm_cli("fork", "cli", "--count", "2")
    assert fork.stdout.split() == [b"cli-1", b"cli-2"], fork.stderr
    stop = hartvm_cli("stop", "cli", "cli-1", "cli-2", "cli-restored")
    assert stop.returncode == 0, stop.stderr
    assert hartvm_cli("exec", "cli", "--", "true").returncode == 125
    assert "cli" not in hartvm_cli("ps").stdout.decode()


def test_ten_forks_each_see_only_their_own_files(base):
    base.run(["sh", "-c", "mkdir -p /data && echo base > /data/base"], check=True)
    clones = base.fork(10)
    try:
        names = [clone.name for clone in clones]
        assert len(set(names)) == 10 and all(name.startswith("base-") for name in names)
        for clone in clones:
            clone.run(["sh", "-c", "hostname > /data/$(hostname)"], check=True)
        seen = set()
        for clone in clones:
            listing = clone.run(["ls", "/data"], check=True).stdout.split()
            assert listing == sorted([b"base", clone.name.encode()])
            seen.add(clone.run(["sh", "-c", "head -c 16 /dev/urandom | od -An -tx1"]).stdout)
        assert len(seen) == 10       # no two clones share random state
        assert base.run(["ls", "/data"]).stdout.split() == [b"base"]
        by_name = {info.name: info for info in hartvm.list_vms()}
        for clone in clones:
            info = by_name[clone.name]
            assert info.state == "running" and info.parent == "base"
            assert info.shared > info.private       # the guest's RAM is the parent's
    finally:
        for clone in clones:
            clone.stop()


def test_a_killed_vm_shows_as_dead_and_stop_cleans_it_up(base, state_dir):
    victim = RemoteVM.up(name="victim", progress=False)
    info = victim.info()
    os.kill(info.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while victim.info().state != "dead" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.info().state == "dead"
    started = time.monotonic()
    with pytest.raises(hartvm.GuestError, match="is dead"):
        victim.run(["true"])
    assert time.monotonic() - started < 2     # reported, not hung on
    ps = hartvm_cli("ps").stdout.decode()
    assert any(line.split()[:2] == ["victim", "dead"] for line in ps.splitlines())
    assert hartvm_cli("stop", "victim").returncode == 0
    assert not (state_dir / "vms" / "victim").exists()


def test_a_stale_directory_without_a_process_is_dead(state_dir):
    directory = state_dir / "vms" / "stale"
    directory.mkdir(parents=True)
    (directory / "info.json").write_text(json.dumps(
        {"pid": 999999999, "memory": 1, "harts": 1, "started": 0, "process_start": 1}))
    (directory / "control.sock").write_text("")
    assert [info.state for info in hartvm.list_vms() if info.name == "stale"] == ["dead"]
    RemoteVM("stale").stop()
    assert not directory.exists()


def _exec_cat(name):
    """``hartvm exec NAME -- cat`` reading from a pipe: busy until the pipe closes."""
    reader, writer = os.pipe()
    process = subprocess.Popen([sys.executable, "-m", "hartvm", "exec", name, "--", "cat"],
                               cwd=ROOT, stdin=reader, stdout=subprocess.PIPE)
    os.close(reader)
    return process, writer


def _wait_busy(vm):
    deadline = time.monotonic() + 20
    while not vm.ping()["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)


def test_commands_for_a_busy_vm_wait_their_turn_and_stop_does_not():
    import threading
    vm = RemoteVM.up(name="busy", progress=False)
    first, writer = _exec_cat("busy")
    _wait_busy(vm)
    results = []
    second = threading.Thread(target=lambda: results.append(vm.run(["echo", "second"])))
    second.start()
    deadline = time.monotonic() + 20
    while vm.ping()["waiting"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vm.ping()["waiting"] == 1 and not results       # it waits
    os.write(writer, b"first\n")
    os.close(writer)
    assert first.communicate(timeout=60) == (b"first\n", None) and first.returncode == 0
    second.join(timeout=60)
    assert results[0].stdout == b"second\n"
    blocked, writer = _exec_cat("busy")                   # stop does not wait
    _wait_busy(vm)
    try:
        vm.stop()
        assert blocked.wait(timeout=30) == 125
    finally:
        os.close(writer)
        blocked.kill()


def test_a_timeout_kills_the_command_not_the_vm(base):
    with pytest.raises(hartvm.CommandTimeout, match="was killed"):
        base.run(["sleep", "100"], timeout=1)
    assert base.run(["echo", "alive"]).stdout == b"alive\n"


def test_a_client_that_goes_away_has_its_command_killed(base):
    client = subprocess.Popen([sys.executable, "-m", "hartvm", "exec", "base", "--", "sh", "-c",
                               "echo $$ > /tmp/orphan; exec sleep 1000"], cwd=ROOT,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not base.ping()["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    client.kill()
    client.wait()
    while base.ping()["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = base.run(["cat", "/tmp/orphan"], check=True).stdout.strip()
    assert base.run(["kill", "-0", pid]).returncode == 1


def test_forks_of_a_vm_with_a_drive_write_to_their_own_overlays(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    read = ["dd", "if=/dev/vda", "bs=512", "count=1", "iflag=direct"]

    def write(vm, text):
        vm.run(["sh", "-c", f"printf {text} | dd of=/dev/vda conv=notrunc,fsync"], check=True)

    parent = RemoteVM.up(name="disks", drives=[str(disk)], progress=False)
    try:
        write(parent, "parent")
        clones = parent.fork(2)
        write(parent, "later!")
        base = disk.read_bytes()
        for clone in clones:
            assert clone.run(read, check=True).stdout[:6] == b"parent"
            write(clone, clone.name)
        for clone in clones:
            assert clone.run(read, check=True).stdout[:7] == clone.name.encode()
            clone.stop()
        assert parent.run(read, check=True).stdout[:6] == b"later!"
        assert disk.read_bytes() == base       # the file is the common base: unchanged
    finally:
        parent.stop()


def test_bad_snapshots_and_names_get_one_line_errors(tmp_path, state_dir):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "state").write_bytes(b"HARTVMSS" + bytes(20))
    for args, message in [
            (("restore", str(tmp_path / "missing")), b"no such snapshot directory"),
            (("restore", str(tmp_path / "corrupt")), b"snapshot format version 0"),
            (("up", "--name", "Bad Name"), b"bad VM name"),
            (("exec", "nobody", "--", "true"), b"no VM named nobody"),
            (("snapshot", "nobody", str(tmp_path / "s")), b"no VM named nobody"),
            (("stop",), b"name the VMs to stop, or give --all")]:
        result = hartvm_cli(*args)
        assert result.returncode in (1, 125), (args, result)
        assert message in result.stderr and b"Traceback" not in result.stderr, (args, result)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not any((state_dir / "vms").iterdir()) or all(
        info.name == "base" for info in hartvm.list_vms())    # nothing left behind


def test_bad_requests_leave_the_vm_running(base, tmp_path):
    failed = hartvm_cli("snapshot", "base", str(tmp_path / "no" / "such" / "dir"))
    assert failed.returncode == 1 and b"cannot write the snapshot" in failed.stderr
    with pytest.raises(hartvm.HartvmError, match="bad timeout"):
        base.run(["true"], timeout="soon")             # the client's own check
    import socket
    from hartvm.vmm import protocol
    with socket.socket(socket.AF_UNIX) as sock:        # the VM process's, for another client
        sock.connect(str(base.info().socket))
        protocol.send_json(sock, protocol.REQUEST,
                           {"op": "exec", "args": ["true"], "timeout": "soon", "env": {}})
        sock.shutdown(socket.SHUT_WR)
        while (frame := protocol.recv_frame(sock))[0] != protocol.REPLY:
            pass
        assert "bad exec request" in protocol.decode_json(frame[1])["error"]
    with socket.socket(socket.AF_UNIX) as sock:        # a client that says nothing
        sock.connect(str(base.info().socket))
        assert base.run(["echo", "fine"]).stdout == b"fine\n"
    assert base.ping()["ok"]


def test_a_timeout_kills_what_the_command_started_too(base):
    """The whole process group goes: nothing keeps the stdin port, so the next
    command reads its input."""
    with pytest.raises(hartvm.CommandTimeout):
        base.run(["sh", "-c", "(sleep 30; sleep 30); true"], timeout=1)
    assert base.run(["cat"], input=b"next\n").stdout == b"next\n"
    assert b"sleep 30" not in base.run(["ps"]).stdout


def test_a_guest_that_powers_off_while_idle_leaves_a_dead_vm_with_its_reason(state_dir):
    vm = RemoteVM.up(name="short", progress=False)
    vm.run(["sh", "-c", "(sleep 1; poweroff -f) >/dev/null 2>&1 &"], check=True)
    deadline = time.monotonic() + 30
    while vm.info().state != "dead" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert vm.info().state == "dead"
    assert b"powered off" in (state_dir / "vms" / "short" / "log").read_bytes()
    vm.stop()
    assert not (state_dir / "vms" / "short").exists()


@pytest.mark.parametrize("where", ["state", "vms"])
def test_a_state_directory_others_can_write_is_refused(tmp_path, monkeypatch, where):
    state = tmp_path / "state"
    (state / "vms").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    (state if where == "state" else state / "vms").chmod(0o777)
    monkeypatch.setenv("HARTVM_STATE_DIR", str(state))
    for args in (["ps"], ["up", "--name", "x"], ["exec", "x", "--", "true"], ["stop", "x"]):
        result = hartvm_cli(*args)
        assert result.returncode != 0 and b"writable by others" in result.stderr, args
        assert b"Traceback" not in result.stderr
    assert not any((state / "vms").iterdir())


def test_restoring_a_snapshot_of_garbage_fails_with_a_reason(base, tmp_path):
    base.snapshot(tmp_path / "snap")
    memory = tmp_path / "snap" / "memory"
    size = memory.stat().st_size
    with open(memory, "r+b") as file:
        file.write(b"\xff" * size)                # every instruction word illegal
    restore = hartvm_cli("restore", str(tmp_path / "snap"), "--name", "garbage")
    assert restore.returncode == 1 and b"did not start" in restore.stderr, restore.stderr
    assert b"Traceback" not in restore.stderr
    assert "garbage" not in hartvm_cli("ps").stdout.decode()


def test_a_timeout_on_a_process_flood_kills_it_and_the_vm_runs_on(base):
    with pytest.raises(hartvm.CommandTimeout, match="was killed"):
        base.run(["sh", "-c", "while :; do sleep 1000 & done"], timeout=3)
    assert base.run(["echo", "alive"]).stdout == b"alive\n"
    assert base.name in hartvm_cli("ps").stdout.decode()


def test_logs_show_the_guest_console_and_ps_speaks_json(base):
    base.run(["sh", "-c", "echo hello-from-the-console > /dev/console"], check=True)
    logs = hartvm_cli("logs", base.name)
    assert logs.returncode == 0 and b"hello-from-the-console" in logs.stdout, logs.stderr
    listed = json.loads(hartvm_cli("ps", "--json").stdout)
    entry = next(vm for vm in listed if vm["name"] == base.name)
    assert entry["state"] == "running" and entry["pid"] == base.info().pid
    assert entry["memory"] == 256 << 20 and entry["harts"] == 1 and entry["private"] > 0
    missing = hartvm_cli("logs", "no-such-vm")
    assert missing.returncode == 1 and b"no VM named" in missing.stderr
