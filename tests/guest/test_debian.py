"""Fetching the default guest from Debian trixie riscv64 (hartvm.guest.debian, apt, sources, deb).

These tests really download from the host's Debian mirror, through apt. The
cache lives in build/guest-cache, so a re-run downloads nothing (the first
run fetches about 110 MB, mostly the kernel package).
"""

import io
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from hartvm.errors import HartvmError
from hartvm.guest import apt, debian, sources

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "guest-cache"
EM_RISCV = 243

needs_apt = pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")


@pytest.fixture(scope="session")
def cache():
    """The cache root shared by the downloading tests (kept between runs)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


@pytest.fixture(scope="session")
def opensbi_deb(cache):
    return debian.fetch(["opensbi"], progress=False, root=cache)["opensbi"]


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    assert "--kernel/--initrd/--bios accept local files" in message
    return message


# --- Downloads ---------------------------------------------------------------

@needs_apt
def test_fetch_opensbi_gives_the_firmware(opensbi_deb, cache):
    assert opensbi_deb.name.startswith("opensbi_") and opensbi_deb.suffix == ".deb"
    assert opensbi_deb.parent == cache / "debian" / "trixie-riscv64"
    paths = debian.extract(opensbi_deb, debian.FIRMWARE_GLOB)
    assert [p.name for p in paths] == ["fw_dynamic.bin"]
    assert paths[0].is_file() and paths[0].stat().st_size > 0
    assert paths[0].is_relative_to(opensbi_deb.parent / opensbi_deb.name.removesuffix(".deb"))


@needs_apt
def test_opensbi_firmware(opensbi_deb, cache):
    firmware = debian.opensbi_firmware(progress=False, root=cache)
    assert firmware == debian.extract(opensbi_deb, debian.FIRMWARE_GLOB)[0]


@needs_apt
def test_second_fetch_downloads_nothing(opensbi_deb, cache, monkeypatch):
    before = opensbi_deb.stat()

    def no_apt(*args, **kwargs):
        raise AssertionError("apt was run for a package that is already cached")

    monkeypatch.setattr(apt.Apt, "run", no_apt)
    again = debian.fetch(["opensbi"], progress=False, root=cache)["opensbi"]
    assert again == opensbi_deb
    after = again.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == \
        (before.st_ino, before.st_mtime_ns, before.st_size)


@needs_apt
def test_resolve_kernel_package(cache):
    name = debian.resolve_kernel_package(progress=False, root=cache)
    assert name.startswith("linux-image-") and name.endswith("riscv64")
    assert name != "linux-image-riscv64"


@needs_apt
def test_busybox_static_is_a_riscv_elf(cache):
    deb = debian.fetch(["busybox-static"], progress=False, root=cache)["busybox-static"]
    [busybox] = debian.extract(deb, ["usr/bin/busybox", "bin/busybox"])
    header = busybox.read_bytes()[:64]
    assert header[:4] == b"\x7fELF"
    assert header[4] == 2 and header[5] == 1          # 64-bit, little-endian
    assert struct.unpack_from("<H", header, 18)[0] == EM_RISCV
    assert busybox.stat().st_mode & 0o100              # still executable


@needs_apt
def test_missing_package_is_one_clear_line(cache):
    with pytest.raises(HartvmError) as error:
        debian.fetch(["hartvm-no-such-package"], progress=False, root=cache)
    assert "hartvm-no-such-package" in one_line(error)


@needs_apt
def test_default_guest(cache):
    guest = debian.default_guest(progress=False, root=cache)
    assert guest.firmware.name == "fw_dynamic.bin" and guest.firmware.stat().st_size > 0
    image = guest.kernel.read_bytes()[:64]
    assert image[0x38:0x3C] == b"RSC\x05"            # RISC-V Linux Image header
    version = guest.modules_dir.name
    assert guest.kernel.name.endswith(version)
    assert guest.modules_dir.parent.name == "modules"
    assert list(guest.modules_dir.rglob("virtio_mmio.ko*"))
    assert guest.busybox.read_bytes()[:4] == b"\x7fELF"
    # Everything is in the cache now: a second call runs no apt download.
    assert debian.default_guest(progress=False, root=cache) == guest


@needs_apt
def test_offline_reuses_the_index_it_has(cache, monkeypatch):
    name = debian.resolve_kernel_package(progress=False, root=cache)
    stamp = debian.package_dir(cache) / "apt" / "updated"
    real_run = apt.Apt.run

    def offline(self, argv, **kwargs):
        if argv[:2] == ["apt-get", "update"]:
            return 100, "E: offline\n"
        return real_run(self, argv, **kwargs)

    monkeypatch.setattr(apt.Apt, "run", offline)
    saved = stamp.stat().st_mtime
    os.utime(stamp, (0, 0))          # an index older than INDEX_MAX_AGE
    try:
        assert debian.resolve_kernel_package(progress=False, root=cache) == name
    finally:
        os.utime(stamp, (saved, saved))


# --- Errors without the network ----------------------------------------------

def test_no_apt_on_the_host(tmp_path, monkeypatch):
    monkeypatch.setattr(apt.shutil, "which", lambda name: None)
    with pytest.raises(HartvmError) as error:
        debian.fetch(["opensbi"], progress=False, root=tmp_path)
    assert "apt-get is not installed" in one_line(error)


@needs_apt
def test_unreachable_mirror(tmp_path, monkeypatch, capsys):
    # Nothing listens on port 9 (discard) of the loopback interface.
    keyring = next(str(k) for k in sources.DEBIAN_KEYRINGS if k.exists())
    monkeypatch.setattr(apt, "host_mirror", lambda: ("http://127.0.0.1:9/debian", keyring))
    monkeypatch.setattr(apt, "host_proxy_settings", lambda: ['Acquire::Retries "0";'])
    with pytest.raises(HartvmError) as error:
        debian.fetch(["opensbi"], progress=False, root=tmp_path)
    assert "package index" in one_line(error)
    assert "127.0.0.1" in capsys.readouterr().err      # apt's own output, on failure only


# --- The cache directory -----------------------------------------------------

def test_cache_root_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert debian.cache_root() == tmp_path / "hartvm"
    assert debian.package_dir() == tmp_path / "hartvm" / "debian" / "trixie-riscv64"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")   # ignored, as XDG says
    monkeypatch.setenv("HOME", str(tmp_path))
    assert debian.cache_root() == tmp_path / ".cache" / "hartvm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert debian.cache_root() == tmp_path / ".cache" / "hartvm"


# --- Reading the host's apt sources ------------------------------------------

def write_sources(tmp_path, sources_list="", **parts):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(sources_list)
    for name, text in parts.items():
        (tmp_path / "sources.list.d" / name.replace("_", ".")).write_text(text)
    return tmp_path


def test_mirror_from_deb822_skips_security_and_third_parties(tmp_path):
    apt_dir = write_sources(tmp_path, a_sources="""\
Types: deb
URIs: https://packages.example/apt
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/example.gpg
""", debian_sources="""\
# the security archive first
Types: deb
URIs: http://security.mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
""")
    assert sources.host_mirror(apt_dir) == (
        "http://mirror.example/debian", "/usr/share/keyrings/debian-archive-keyring.gpg")


def test_mirror_from_one_line_sources(tmp_path):
    apt_dir = write_sources(tmp_path, """\
# deb http://old.mirror.example/debian bookworm main
deb-src http://src.mirror.example/debian bookworm main
deb http://security.mirror.example/debian-security bookworm-security main
deb [ arch=amd64 signed-by=/etc/apt/keyrings/debian.gpg ] http://mirror.example/debian bookworm main
""")
    assert sources.host_mirror(apt_dir) == ("http://mirror.example/debian",
                                            "/etc/apt/keyrings/debian.gpg")


def test_mirror_keeps_an_inline_key_and_skips_disabled_entries(tmp_path):
    apt_dir = write_sources(tmp_path, debian_sources="""\
Enabled: no
Types: deb
URIs: http://disabled.mirror.example/debian
Suites: trixie
Components: main

Types: deb
URIs: http://mirror.example/debian
Suites: stable
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPR8lsD3K87ZM18gzyQZJD+w
 -----END PGP PUBLIC KEY BLOCK-----
""")
    uri, signed_by = sources.host_mirror(apt_dir)
    assert uri == "http://mirror.example/debian"
    assert signed_by.splitlines()[1:] == [
        " -----BEGIN PGP PUBLIC KEY BLOCK-----", " .",
        " mQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPR8lsD3K87ZM18gzyQZJD+w",
        " -----END PGP PUBLIC KEY BLOCK-----"]


def test_mirror_without_signed_by_uses_the_archive_keyring(tmp_path):
    apt_dir = write_sources(tmp_path, "deb http://mirror.example/debian trixie main\n")
    expected = next((str(k) for k in sources.DEBIAN_KEYRINGS if k.exists()), "")
    assert sources.host_mirror(apt_dir) == ("http://mirror.example/debian", expected)


def test_mirror_prefers_debian_keyring_then_codenames(tmp_path):
    apt_dir = write_sources(tmp_path, """\
deb http://browser.example/deb stable main
deb [signed-by=/usr/share/keyrings/pgdg.gpg] http://db.example/apt bookworm-pgdg main
deb http://mirror.example/debian bookworm main
""")
    assert sources.host_mirror(apt_dir)[0] == "http://mirror.example/debian"
    (apt_dir / "sources.list.d" / "trixie.sources").write_text("""\
Types: deb
URIs: http://other.mirror.example/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.pgp
""")
    assert sources.host_mirror(apt_dir) == ("http://other.mirror.example/debian",
                                            "/usr/share/keyrings/debian-archive-keyring.pgp")


def test_no_debian_source(tmp_path):
    apt_dir = write_sources(tmp_path, "deb http://archive.example/ubuntu noble main\n")
    with pytest.raises(HartvmError) as error:
        sources.host_mirror(apt_dir)
    assert "no Debian archive source" in one_line(error)


# --- Extracting .deb files ---------------------------------------------------

def make_deb(path: Path, files: dict[str, bytes], compression: str) -> Path:
    """A minimal .deb (ar archive) whose data.tar is compressed as asked."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    raw = tar_bytes.getvalue()
    if compression == "gz":
        import gzip
        data_member = gzip.compress(raw)
    elif compression == "zst":
        data_member = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True,
                                     check=True).stdout
    else:
        data_member = raw
    name = "data.tar" + (f".{compression}" if compression else "")
    members = [("debian-binary", b"2.0\n"), ("control.tar", b""), (name, data_member)]
    with open(path, "wb") as f:
        f.write(b"!<arch>\n")
        for member, data in members:
            f.write(f"{member:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
            f.write(data + (b"\n" if len(data) % 2 else b""))
    return path


@pytest.mark.parametrize("compression", ["", "gz", "zst"])
def test_extract_compressions(tmp_path, compression):
    if compression == "zst" and not (shutil.which("zstd") and shutil.which("dpkg-deb")):
        pytest.skip("needs zstd and dpkg-deb")
    deb = make_deb(tmp_path / "demo_1.0_all.deb",
                   {"usr/bin/demo": b"\x7fELF demo", "usr/share/doc/demo/README": b"hi"},
                   compression)
    [path] = debian.extract(deb, "usr/bin/*")
    assert path == tmp_path / "demo_1.0_all" / "usr" / "bin" / "demo"
    assert path.read_bytes() == b"\x7fELF demo"
    # Unpacked once: the second call finds the files already there.
    path.write_bytes(b"changed")
    assert debian.extract(deb, "usr/bin/*") == [path]
    assert path.read_bytes() == b"changed"


def test_extract_rejects_a_file_that_is_not_a_deb(tmp_path):
    bogus = tmp_path / "bogus.deb"
    bogus.write_bytes(b"not an ar archive")
    with pytest.raises(HartvmError):
        debian.extract(bogus, "*")
