"""Scratch directories of killed processes are swept by the next one."""

import os
import subprocess
import sys

from hartvm.vmm import scratch


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftovers_of_dead_processes_are_swept_and_live_ones_kept(tmp_path):
    dead = tmp_path / f"hartvm-disks-{_dead_pid()}-abc"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "disk0").write_bytes(b"x" * 4096)
    live = tmp_path / f"hartvm-disks-{os.getppid()}-def"
    live.mkdir()
    other = tmp_path / f"hartvm-fork-{_dead_pid()}-ghi"      # another prefix: not ours here
    other.mkdir()
    made = scratch.make("hartvm-disks-", tmp_path)
    assert made.parent == tmp_path and made.name.startswith(f"hartvm-disks-{os.getpid()}-")
    assert not dead.exists() and live.exists() and other.exists()


def test_a_snapshot_staging_directory_of_a_killed_save_is_swept(tmp_path):
    stale = tmp_path / f".snap.{_dead_pid()}-xyz"
    stale.mkdir()
    (stale / "memory").write_bytes(bytes(1 << 16))
    scratch.make(".snap.", tmp_path)
    assert not stale.exists()
