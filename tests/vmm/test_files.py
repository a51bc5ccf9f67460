"""Files in and out of running VMs: ``RemoteVM.put_file``/``get_file`` and
``hartvm cp`` both ways, files and directories; and archives from a hostile
guest that try to write outside the destination, refused (from a fake guest
for every trick, and from a real one)."""

import io
import os
import subprocess
import sys
import tarfile

import pytest

import hartvm
from hartvm.vmm import files
from hartvm.vmm.results import CommandResult

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def vm(state_dir):
    with hartvm.VM.up(name="files", progress=False) as remote:
        yield remote


def cp(*args):
    return subprocess.run([sys.executable, "-m", "hartvm", "cp", *map(str, args)],
                          capture_output=True, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=300)


def tree(path) -> dict:
    """Every entry under ``path``: file contents, link targets, directories."""
    found = {}
    for directory, names, filenames in os.walk(path):
        for name in names + filenames:
            full = os.path.join(directory, name)
            key = os.path.relpath(full, path)
            if os.path.islink(full):
                found[key] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                found[key] = ("dir",)
            else:
                found[key] = ("file", open(full, "rb").read(), os.stat(full).st_mode & 0o777)
    return found


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "top.txt").write_bytes(b"top\n")
    (root / "sub" / "data.bin").write_bytes(os.urandom(200_000))
    (root / "sub" / "deeper" / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "sub" / "deeper" / "run.sh").chmod(0o755)
    (root / "link").symlink_to("top.txt")
    return root


def test_remote_put_file_and_get_file(vm, tmp_path):
    data = os.urandom(100_000)
    vm.put_file(data, "/tmp/blob", mode=0o600)
    assert vm.run(["stat", "-c", "%a %s", "/tmp/blob"]).stdout == b"600 100000\n"
    assert vm.get_file("/tmp/blob", tmp_path / "back") == data
    assert (tmp_path / "back").read_bytes() == data
    with pytest.raises(hartvm.HartvmError, match="cannot read /no/such/file"):
        vm.get_file("/no/such/file")


def test_cp_a_directory_in_and_out_again(vm, source, tmp_path):
    done = cp(source, "files:/root/copy")
    assert done.returncode == 0, done.stderr
    listing = vm.run(["sh", "-c", "cd /root/copy && find . | sort && stat -c '%U %a' "
                      "sub/deeper/run.sh && readlink link"], check=True).stdout.decode()
    assert listing.split() == [".", "./link", "./sub", "./sub/data.bin", "./sub/deeper",
                               "./sub/deeper/run.sh", "./top.txt", "root", "755", "top.txt"]
    # out again: to a new name, into an existing directory, and the contents only
    assert cp("files:/root/copy", tmp_path / "new").returncode == 0
    (tmp_path / "existing").mkdir()
    assert cp("files:/root/copy", tmp_path / "existing").returncode == 0
    assert cp("files:/root/copy/.", tmp_path / "contents").returncode == 0
    for copied in (tmp_path / "new", tmp_path / "existing" / "copy", tmp_path / "contents"):
        assert tree(copied) == tree(source)
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".hartvm-cp-")]


def test_cp_a_file_both_ways(vm, source, tmp_path):
    assert cp(source / "sub" / "deeper" / "run.sh", "files:/usr/bin/").returncode == 0
    assert vm.run(["run.sh"]).stdout == b"hi\n"                   # into the directory, mode kept
    assert cp(source / "top.txt", "files:/root/renamed").returncode == 0
    assert vm.get_file("/root/renamed") == b"top\n"
    (tmp_path / "old").write_bytes(b"replaced")
    assert cp("files:/root/renamed", tmp_path / "old").returncode == 0
    assert (tmp_path / "old").read_bytes() == b"top\n"
    (tmp_path / "dir").mkdir()
    assert cp("files:/root/renamed", tmp_path / "dir").returncode == 0
    assert (tmp_path / "dir" / "renamed").read_bytes() == b"top\n"


@pytest.mark.parametrize("args, message", [
    (["files:/no/such/file", "OUT/x"], "no such file or directory"),
    (["OUT/missing-host-file", "files:/tmp/x"], "no such file"),
    (["files:/root", "OUT/no/such/dir/x"], "does not exist"),
    (["files:/etc", "OUT/a-file"], "cannot replace a file with a directory"),
    (["OUT/a-file", "files:/no/such/dir/"], "not a directory"),
    (["OUT/a-file", "OUT/b"], "exactly one of SRC and DST"),
    (["files:/a", "files:/b"], "exactly one of SRC and DST"),
    (["no-such-vm:/a", "OUT/b"], "no VM named no-such-vm"),
    (["files:", "OUT/b"], "give a path in the VM"),
])
def test_cp_errors_are_one_line(vm, tmp_path, args, message):
    (tmp_path / "a-file").write_bytes(b"mine")
    result = cp(*[arg.replace("OUT", str(tmp_path)) for arg in args])
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("hartvm: ")
    assert message in lines[0], lines
    assert (tmp_path / "a-file").read_bytes() == b"mine"


# --- archives from a hostile guest --------------------------------------------------

def evil_archive(outside: str, case: str) -> bytes:
    """A tar archive that answers a request for ``x`` and tries to write ``outside``
    (an absolute host path) or next to the destination."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name, kind=tarfile.REGTYPE, link="", data=b"evil"):
            member = tarfile.TarInfo(name)
            member.type, member.linkname = kind, link
            member.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(member, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("x", tarfile.DIRTYPE)
        if case == "dotdot":
            add("x/../../escape")
        elif case == "absolute":
            add(outside)
        elif case == "absolute symlink":
            add("x/link", tarfile.SYMTYPE, os.path.dirname(outside))
            add("x/link/escape")
        elif case == "relative symlink":
            add("x/link", tarfile.SYMTYPE, "../../..")
            add("x/link/escape")
        elif case == "hard link":
            add("x/hard", tarfile.LNKTYPE, outside)
        elif case == "other name":
            add("escape")
        elif case == "device":
            add("x/dev", tarfile.CHRTYPE)
    return buffer.getvalue()


class FakeGuest(files.FileTransfer):
    """A guest whose every command answers with ``archive`` on stdout."""

    def __init__(self, archive: bytes):
        self.archive = archive

    def run(self, args, stdout=None, **options):
        stdout(self.archive)
        return CommandResult(args, 0, b"", b"")


CASES = ["dotdot", "absolute", "absolute symlink", "relative symlink", "hard link",
         "other name", "device"]


@pytest.mark.parametrize("exists", [True, False], ids=["into a directory", "as a new name"])
@pytest.mark.parametrize("case", CASES)
def test_a_hostile_archive_writes_nothing_outside_the_destination(tmp_path, case, exists):
    box = tmp_path / "a" / "b"
    box.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    destination = box / "dest"
    if exists:
        destination.mkdir()
    before = {path for path in tmp_path.rglob("*")}
    with pytest.raises(hartvm.HartvmError, match="archive"):
        FakeGuest(evil_archive(str(tmp_path / "escape"), case)).copy_from_guest("/x",
                                                                                 destination)
    written = {path for path in tmp_path.rglob("*")} - before
    assert all(destination in path.parents for path in written), written
    assert victim.read_bytes() == b"precious"
    assert not [p for p in box.iterdir() if p.name.startswith(".hartvm-cp-")]


def test_an_honest_archive_passes_the_same_checks(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("x/inner", b"fine"),):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        link = tarfile.TarInfo("x/link")
        link.type, link.linkname = tarfile.SYMTYPE, "inner"
        tar.addfile(link)
    FakeGuest(buffer.getvalue()).copy_from_guest("/x", tmp_path / "out")
    assert tree(tmp_path / "out") == {"inner": ("file", b"fine", 0o644),
                                      "link": ("link", "inner")}


def test_a_real_guest_archive_that_links_outside_is_refused_in_one_line(vm, tmp_path):
    """The guest's own tar archives a symbolic link to a host directory by its
    absolute path: refused, and nothing reaches that directory."""
    outside = tmp_path / "outside"
    outside.mkdir()
    vm.run(["sh", "-c", 'mkdir -p /root/x/real && echo evil > /root/x/real/escape && '
            'ln -s "$1" /root/x/link', "sh", str(outside)], check=True)
    (tmp_path / "in").mkdir()
    result = cp("files:/root/x", tmp_path / "in")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "refused" in lines[0], lines
    assert not os.listdir(outside)


@pytest.mark.parametrize("path, expected", [
    ("/etc/passwd", ("/etc", "passwd", False)), ("dir/", (".", "dir", False)),
    ("/", ("/", ".", True)), ("/etc/.", ("/etc", ".", True)), ("name", (".", "name", False)),
])
def test_guest_paths_split_as_docker_cp_reads_them(path, expected):
    assert files.split_guest_path(path) == expected


@pytest.mark.parametrize("path", ["", "/a/..", "a\0b"])
def test_bad_guest_paths_are_refused(path):
    with pytest.raises(hartvm.HartvmError):
        files.split_guest_path(path)


def test_an_in_process_vm_copies_directories_both_ways(source, tmp_path):
    with hartvm.VM(progress=False) as vm:
        vm.copy_to_guest(source, "/root/tree")
        assert vm.run(["cat", "/root/tree/top.txt"]).stdout == b"top\n"
        vm.copy_from_guest("/root/tree", tmp_path / "back")
    assert tree(tmp_path / "back") == tree(source)
