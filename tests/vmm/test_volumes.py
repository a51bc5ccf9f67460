"""Volumes through Linux's 9p client in a real guest: host files in, guest files
out (without ``sync``), read-only refused, and no guest trick that reads a
host file outside the shared folder. Bad specs are one-line errors."""

import os
import subprocess
import sys

import pytest

import hartvm
from conftest import ROOT
from hartvm.devices.virtio import p9server as p9
from hartvm.errors import HartvmError

SECRET = "host secret outside the share"


@pytest.fixture(scope="module")
def vm():
    with hartvm.VM(memory="256M", progress=False) as machine:
        yield machine


@pytest.fixture
def share(tmp_path):
    """tmp/share (the volume), with a file and hostile symlinks; tmp/secret.txt
    beside it, outside."""
    (tmp_path / "secret.txt").write_text(SECRET)
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello.txt").write_text("hello from the host\n")
    os.symlink(str(tmp_path / "secret.txt"), share / "abs")
    os.symlink("../secret.txt", share / "rel")
    os.symlink("../..", share / "up")
    return share


def sh(vm, script, volumes):
    return vm.run(["sh", "-c", script], volumes=volumes)


def test_host_files_are_read_and_guest_files_written_without_sync(vm, share):
    result = sh(vm, "cat /data/hello.txt && mkdir /data/made && "
                    "dd if=/dev/zero of=/data/made/zeros bs=4096 count=300 2>/dev/null && "
                    "printf 'from the guest' > /data/out.txt", [f"{share}:/data"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello from the host\n"
    # The run is over: the bytes are in the host files, owned by this user.
    assert (share / "out.txt").read_bytes() == b"from the guest"
    assert (share / "made" / "zeros").read_bytes() == bytes(300 * 4096)
    assert os.stat(share / "out.txt").st_uid == os.getuid()


def test_large_io_goes_in_large_messages(vm, share):
    """hartvm's mount caches pages (shared_folders.CACHE): with the default cache=none
    Linux 6.12 sends every Tread/Twrite as 4 KiB, whatever the msize."""
    server = vm.shared.device.server
    sizes, handle = [], server.handle
    server.handle = lambda request, *args, **kwargs: _recorded(handle, sizes, request,
                                                              *args, **kwargs)
    try:
        result = sh(vm, "dd if=/dev/zero of=/data/big bs=64k count=32 2>/dev/null && "
                        "dd if=/data/big of=/dev/null bs=64k 2>/dev/null", [f"{share}:/data"])
    finally:
        del server.handle
    assert result.returncode == 0, result.stderr
    assert (share / "big").stat().st_size == 2 << 20
    for kind in (p9.TWRITE, p9.TREAD):
        assert max(size for k, size in sizes if k == kind) > 256 << 10, sizes


def _recorded(handle, sizes, request, *args, **kwargs):
    reply = handle(request, *args, **kwargs)
    if len(request) > 4 and request[4] in (p9.TREAD, p9.TWRITE):
        sizes.append((request[4], max(int.from_bytes(request[:4], "little"), len(reply))))
    return reply


def test_a_file_held_open_in_the_background_reaches_the_host(vm, share):
    """Cached pages of a file a background process still holds open for writing
    are written back when the command ends (the guest syncs)."""
    result = sh(vm, "(exec 3>/data/held; echo held >&3; sleep 100000) "
                    ">/dev/null 2>&1 </dev/null &", [f"{share}:/data"])
    assert result.returncode == 0, result.stderr
    assert (share / "held").read_bytes() == b"held\n"
    sh(vm, "kill %1 2>/dev/null; pkill sleep; true", None)


def test_a_read_only_volume_refuses_writes(vm, share):
    result = sh(vm, "echo x > /data/new; echo x >> /data/hello.txt; rm /data/hello.txt; "
                    "mkdir /data/dir; cat /data/hello.txt", [(str(share), "/data", "ro")])
    assert result.stderr.count(b"Read-only file system") == 4, result.stderr
    assert result.stdout == b"hello from the host\n"
    assert sorted(os.listdir(share)) == ["abs", "hello.txt", "rel", "up"]
    assert (share / "hello.txt").read_text() == "hello from the host\n"


def test_symlinks_and_dotdot_never_reach_host_files_outside(vm, share):
    result = sh(vm, "cat /data/abs; cat /data/rel; cat /data/up/secret.txt; "
                    "cat /data/../secret.txt; cat /data/../../secret.txt; "
                    "cat /data/up/share/../secret.txt; readlink /data/abs; ls /data/up/",
                [f"{share}:/data"])
    assert SECRET.encode() not in result.stdout + result.stderr
    assert str(share.parent / "secret.txt").encode() in result.stdout   # the link's text only
    # `up` is the guest's own /data/../.. = the guest's root.
    assert b"proc" in result.stdout


def test_per_command_volumes_go_away_and_the_vms_own_stay(share, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("kept")
    with hartvm.VM(memory="256M", progress=False, volumes=[f"{other}:/keep"]) as machine:
        assert sh(machine, "cat /data/hello.txt", [f"{share}:/data"]).returncode == 0
        result = sh(machine, "ls /data; cat /keep/keep.txt", None)
        assert result.stdout == b"kept"
        assert sh(machine, "echo more >> /keep/keep.txt", None).returncode == 0
        assert (other / "keep.txt").read_text() == "keptmore\n"


@pytest.mark.parametrize("spec", ["/nonexistent:/data", "/etc/passwd:/data", "SHARE:data",
                                  "SHARE:/data:rx", "SHARE", "SHARE:/", "SHARE:/data:ro:x"])
def test_bad_volume_specs_are_refused_and_the_vm_stays_usable(vm, share, spec):
    with pytest.raises(HartvmError):
        vm.run(["true"], volumes=[spec.replace("SHARE", str(share))])
    assert vm.run(["true"]).returncode == 0


def test_the_cli_shares_a_volume_through_the_run_pool(share):
    result = subprocess.run(
        [sys.executable, "-m", "hartvm", "run", "-v", f"{share}:/data", "-v",
         f"{share}:/ro:ro", "--", "sh", "-c", "cat /ro/hello.txt; echo pool > /data/pool.txt; "
                                             "echo no > /ro/no.txt"],
        capture_output=True, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=600)
    assert result.stdout == b"hello from the host\n"
    assert b"Read-only file system" in result.stderr and result.returncode != 0
    assert (share / "pool.txt").read_text() == "pool\n"
    assert not (share / "no.txt").exists()
