"""Guest images: the busybox guest, Debian's image built on first use, images of
one's own, and the image store's rules (vmm/images.py, guest/bootstrap.py).

The tests marked ``image`` build Debian images (minutes the first time, then
cached in the user's cache like any guest file): ``pytest -m 'not image'``
skips them locally; CI runs them.
"""

import json
import os
import subprocess
import sys

import pytest

from hartvm import VM
from hartvm.errors import HartvmError
from hartvm.vmm import cache, images

HARTVM = [sys.executable, "-m", "hartvm"]


def hartvm(*args, input=None, timeout=1800):
    return subprocess.run([*HARTVM, *args], input=input, capture_output=True,
                          timeout=timeout)


# --- the store's rules, without building anything ------------------------------------

@pytest.mark.parametrize("name", ["", "Debian", "-x", "a/b", "..", "x" * 65, "a b", None])
def test_bad_image_names_are_refused(name):
    with pytest.raises(HartvmError, match="bad image name"):
        images.check_name(name)


@pytest.mark.parametrize("package", ["", "A", "-x", "a;b", "a b", "x/y"])
def test_bad_package_names_are_refused(package):
    with pytest.raises(HartvmError, match="bad Debian package name"):
        images.check_packages([package])


def test_an_unknown_image_is_an_error_naming_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(HartvmError, match="hartvm image build mine"):
        images.find("mine")
    assert not images.is_built("mine") and images.is_built("busybox")


def test_busybox_is_built_in_and_cannot_be_removed_or_rebuilt():
    assert images.find("busybox").rootfs is None
    with pytest.raises(HartvmError, match="built into hartvm"):
        images.remove("busybox")
    with pytest.raises(HartvmError, match="built into hartvm"):
        images.build("busybox", VM, packages=["less"])
    with pytest.raises(HartvmError, match="not from busybox"):
        images.build("mine", VM, base="busybox", packages=["less"])


def test_an_image_of_another_format_counts_as_not_built(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    directory = images.images_dir() / "old"
    directory.mkdir(parents=True)
    (directory / images.ROOTFS).write_bytes(bytes(4096))
    (directory / images.INFO).write_text(json.dumps({"format": images.FORMAT + 1}))
    assert not images.is_built("old")
    (directory / images.INFO).write_text(json.dumps({"format": images.FORMAT}))
    assert images.is_built("old")
    assert [image.name for image in images.list_images()] == ["busybox", "old"]
    images.remove("old")
    assert not directory.exists()


def test_pruning_keeps_other_images_and_drops_other_builds_of_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    files = [tmp_path / "kernel"]
    files[0].write_bytes(b"k")
    keep = cache.booted_snapshot_path(files, 256 << 20, 1, "debian", "build-2")
    names = {
        "busybox": cache.booted_snapshot_path(files, 256 << 20, 1, "busybox", "busybox"),
        "old build": cache.booted_snapshot_path(files, 512 << 20, 1, "debian", "build-1"),
        "other size": cache.booted_snapshot_path(files, 512 << 20, 1, "debian", "build-2"),
        "my-image": cache.booted_snapshot_path(files, 256 << 20, 1, "my-image", "x"),
    }
    for path in [keep, *names.values()]:
        path.mkdir(parents=True)
    cache.prune(keep)
    assert keep.exists()
    assert {label for label, path in names.items() if path.exists()} == \
        {"busybox", "other size", "my-image"}


def test_cli_image_ls_lists_busybox_and_rejects_bad_input():
    listed = hartvm("image", "ls")
    assert listed.returncode == 0 and b"busybox" in listed.stdout
    for args in (["image", "build", "Bad"], ["image", "build", "x", "--packages", "a b"],
                 ["image", "rm", "busybox"], ["run", "--image", "../x", "--", "true"]):
        result = hartvm(*args)
        assert result.returncode != 0
        assert b"Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 3


# --- Debian images, built for real ----------------------------------------------------

@pytest.mark.image
def test_debian_runs_python_with_its_standard_library():
    result = hartvm("run", "--image", "debian", "--", "python3", "-c",
                    "import sqlite3, ssl, json; print(6*7)")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"42\n"


@pytest.mark.image
def test_every_run_starts_from_the_clean_image():
    first = hartvm("run", "--image", "debian", "--", "sh", "-c",
                   "echo dirty > /etc/dirt && rm /usr/bin/less && cat /etc/dirt")
    assert first.stdout == b"dirty\n"
    second = hartvm("run", "--image", "debian", "--", "sh", "-c",
                    "ls /etc/dirt; command -v less")
    assert b"No such file" in second.stderr and second.stdout == b"/usr/bin/less\n"
    image = images.find("debian")
    assert image.rootfs.stat().st_mode & 0o222 == 0      # read-only on the host


@pytest.mark.image
def test_debian_guest_is_debian_with_bash_and_its_root_on_the_image():
    with VM(image="debian") as vm:
        result = vm.run(["sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME; "
                         "bash -c 'echo $BASH_VERSION' | cut -c1; "
                         "df -P / | tail -1 | cut -d' ' -f1; ps -o comm= -p 1"])
        lines = result.stdout.decode().split("\n")
        assert lines[0] == "trixie"
        assert lines[1] == "5"                    # bash 5
        assert lines[2] == "/dev/vda"             # the image is the root
        assert lines[3] == "busybox"              # busybox's shell is PID 1, no systemd


@pytest.mark.image
def test_an_image_of_ones_own_adds_packages_to_debian(tmp_path):
    built = hartvm("image", "build", "test-jq", "--from", "debian", "--packages", "jq", "-q")
    assert built.returncode == 0, built.stderr.decode()
    try:
        listed = hartvm("image", "ls").stdout.decode()
        assert any(line.split()[:2] == ["test-jq", "debian"] for line in listed.splitlines())
        result = hartvm("run", "--image", "test-jq", "--", "jq", "-n", "6*7",
                        input=b"")
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b"42\n"
        assert hartvm("run", "--image", "debian", "--", "jq").returncode == 127
    finally:
        assert hartvm("image", "rm", "test-jq").returncode == 0
    assert not images.is_built("test-jq")
    assert os.path.exists(images.find("debian").rootfs)   # the base is untouched


@pytest.mark.image
def test_disk_size_grows_the_root_filesystem_and_stays_sparse():
    result = hartvm("run", "--image", "debian", "--disk-size", "6G", "--", "sh", "-c",
                    "df -P -m / | tail -1")
    assert result.returncode == 0, result.stderr.decode()
    total_mib = int(result.stdout.split()[1])
    assert 5500 < total_mib <= 6144
    default = hartvm("run", "--image", "debian", "--", "sh", "-c", "df -P -m / | tail -1")
    assert 1800 < int(default.stdout.split()[1]) <= 2048
    too_small = hartvm("run", "--image", "debian", "--disk-size", "1G", "--", "true")
    assert too_small.returncode == 125 and b"smaller than the image" in too_small.stderr
    busybox = hartvm("run", "--disk-size", "4G", "--", "true")
    assert busybox.returncode == 125 and b"busybox has none" in busybox.stderr
