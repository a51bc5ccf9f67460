"""Nothing written is lost: what a guest wrote to a ``--drive`` filesystem without
``sync`` is in the host file once ``hartvm run`` ends (normally, with the
command's error, by ``--timeout``, by Ctrl-C), once ``VM.close()`` returns and
once ``hartvm stop`` does; and the filesystem is clean (``e2fsck -n``). The
host file is read with e2fsprogs' ``debugfs``, never mounted."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import hartvm
from hartvm.vmm import flush
from hartvm.vmm.client import RemoteVM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOUNT = "mount /dev/vda /mnt"


def tool(name: str) -> str | None:
    return shutil.which(name, path="/usr/sbin:/sbin:" + os.environ.get("PATH", ""))


pytestmark = pytest.mark.skipif(not all(map(tool, ("mke2fs", "debugfs", "e2fsck"))),
                                reason="needs e2fsprogs (mke2fs, debugfs, e2fsck)")


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    with open(path, "wb") as file:
        file.truncate(32 << 20)
    subprocess.run([tool("mke2fs"), "-q", "-t", "ext4", "-F", str(path)], check=True)
    return path


def read_back(image, name: str) -> bytes:
    """A file of the ext4 ``image``, read on the host by debugfs."""
    return subprocess.run([tool("debugfs"), "-R", f"cat /{name}", str(image)],
                          capture_output=True, check=True).stdout


def fsck_clean(image) -> subprocess.CompletedProcess:
    return subprocess.run([tool("e2fsck"), "-fn", str(image)], capture_output=True, text=True)


def hartvm_run(image, *command, timeout=None):
    options = ["--timeout", str(timeout)] if timeout else []
    return subprocess.run([sys.executable, "-m", "hartvm", "run", "--drive", str(image),
                           *options, "--", "sh", "-c", *command], capture_output=True,
                          cwd=ROOT, stdin=subprocess.DEVNULL, timeout=600)


@pytest.mark.parametrize("ending, status", [
    ("", 0),                               # the command ends
    ("; exit 3", 3),                       # the command fails
    ("; while :; do :; done", 124),        # --timeout kills it
])
def test_data_written_without_sync_is_on_the_host_when_run_ends(image, ending, status):
    result = hartvm_run(image, f"{MOUNT} && echo unsynced-data > /mnt/file" + ending,
                        timeout=5 if status == 124 else None)
    assert result.returncode == status, result.stderr
    assert read_back(image, "file") == b"unsynced-data\n"
    check = fsck_clean(image)
    assert check.returncode == 0, check.stdout


def test_ctrl_c_in_the_middle_of_writes_leaves_a_clean_filesystem(image):
    process = subprocess.Popen(
        [sys.executable, "-m", "hartvm", "run", "--drive", str(image), "--", "sh", "-c",
         f"{MOUNT} && echo writing && i=0 && while :; do "
         "echo line $i >> /mnt/log; i=$((i + 1)); done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        assert process.stdout.readline() == b"writing\n"
        time.sleep(2)                         # the loop writes meanwhile
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.decode().splitlines()[-1] == "hartvm: interrupted"
    check = fsck_clean(image)
    assert check.returncode == 0, check.stdout
    lines = read_back(image, "log").splitlines()
    assert len(lines) > 10 and lines[:2] == [b"line 0", b"line 1"]


def test_close_and_stop_flush_what_was_written(image, tmp_path, monkeypatch):
    with hartvm.VM(drives=[str(image)], progress=False) as vm:
        # A process left in the background keeps the mount busy (its cwd).
        vm.run(f"{MOUNT} && echo from-close > /mnt/closed && cd /mnt && {{ sleep 1000 & }}",
               check=True)
        assert b"/dev/vda /mnt" in vm.get_file("/proc/mounts")
    assert read_back(image, "closed") == b"from-close\n"
    assert fsck_clean(image).returncode == 0
    monkeypatch.setenv("HARTVM_STATE_DIR", str(tmp_path / "state"))
    remote = RemoteVM.up(name="flushed", drives=[str(image)], progress=False)
    remote.run(f"{MOUNT} && echo from-stop > /mnt/stopped", check=True)
    remote.stop()
    assert read_back(image, "stopped") == b"from-stop\n"
    assert fsck_clean(image).returncode == 0


def test_a_guest_that_never_flushes_costs_a_bounded_wait(image, monkeypatch):
    """A hung guest (here: its flush spins forever) must not hang the host: the
    flush is given up after its budget of instructions, and the VM closes."""
    monkeypatch.setattr(flush, "FLUSH_BUDGET", 100_000_000)
    monkeypatch.setattr(flush, "FLUSH_SCRIPT", "while :; do :; done")
    vm = hartvm.VM(drives=[str(image)], progress=False)
    vm.run(f"{MOUNT} && echo synced > /mnt/file && sync", check=True)
    machine = vm.machine
    started = machine.instructions
    vm.close()
    spent = machine.instructions - started
    assert vm.closed and vm.machine is None
    assert 100_000_000 <= spent < 150_000_000, spent
    assert read_back(image, "file") == b"synced\n"
