"""Fetching the default guest's files from Debian trixie (riscv64) through apt.

The default guest is made of three Debian packages: ``opensbi`` (the M-mode
firmware), the kernel package that ``linux-image-riscv64`` depends on (the
kernel Image and its modules) and ``busybox-static`` (the guest's userland).
They are downloaded with the host's own ``apt-get``, so they come from the
mirror the host is configured with and go through apt's signature checks
(signed ``InRelease`` -> ``Packages`` hashes -> ``.deb`` hashes).

apt runs with a private configuration: its own package lists, cache, sources
and configuration directory, all under the cache directory, so the host's
apt state (its lists, its cache, its installed packages) is neither used nor
modified, and the host's apt hooks (``APT::Update::Post-Invoke`` and
friends) never run. Only three things come from the host: the mirror URI and
its ``Signed-By`` keyring (from the host's sources) and its proxy settings
(from ``apt-config dump``).

Layout of the cache (``$XDG_CACHE_HOME/hartvm``, default ``~/.cache/hartvm``)::

    debian/trixie-riscv64/
        apt/                          private apt configuration and state
        opensbi_1.6-1_all.deb         downloaded packages, as apt names them
        opensbi_1.6-1_all/            files extracted from that package
        ...

Downloaded packages are reused as they are: ``fetch`` only calls apt for the
packages it does not have yet. The package index is refreshed when it is
older than a week (or when the host's mirror changes), so a new kernel
reaches the cache after a Debian point release; an offline host keeps using
the index and packages it already has.
"""

import contextlib
import fcntl
import fnmatch
import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import HartvmError

SUITE = "trixie"
COMPONENT = "main"
ARCH = "riscv64"
KERNEL_METAPACKAGE = "linux-image-riscv64"
FIRMWARE_PACKAGE = "opensbi"
BUSYBOX_PACKAGE = "busybox-static"

# Paths inside the packages (without the leading "./" of the data archive).
# Debian moved everything to /usr in trixie ("merged /usr"), older releases
# shipped /bin and /lib: both spellings are accepted.
FIRMWARE_GLOB = "usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"
KERNEL_GLOBS = ("boot/vmlinux-*", "boot/vmlinuz-*")
MODULES_GLOBS = ("usr/lib/modules/*", "lib/modules/*")
BUSYBOX_GLOBS = ("usr/bin/busybox", "bin/busybox")

HOST_APT_DIR = Path("/etc/apt")
# The keyring of the debian-archive-keyring package: .gpg up to bookworm,
# .pgp from trixie on.
DEBIAN_KEYRINGS = (Path("/usr/share/keyrings/debian-archive-keyring.gpg"),
                   Path("/usr/share/keyrings/debian-archive-keyring.pgp"))

# How long a downloaded package index is trusted before `apt-get update`.
INDEX_MAX_AGE = 7 * 24 * 3600

# Suite names of the Debian archive. A host source is taken as "the Debian
# archive" when one of its suites is one of these (possibly with one of the
# suffixes), with component main; the security archive ("-security") is not
# one of them. This tells Debian apart from third-party repositories without
# knowing any host name; among several candidates, those signed with the
# Debian archive keyring come first, then those named by a codename (third
# parties such as browser vendors call their suite "stable").
DEBIAN_CODENAMES = {"jessie", "stretch", "buster", "bullseye", "bookworm", "trixie",
                    "forky", "duke", "sid"}
DEBIAN_ALIASES = {"oldoldstable", "oldstable", "stable", "testing", "unstable"}
DEBIAN_SUFFIXES = ("", "-updates", "-backports", "-backports-sloppy", "-proposed-updates")

HINT = "--kernel/--initrd/--bios accept local files"


@dataclass(frozen=True)
class GuestFiles:
    """The files of the default guest, all inside the cache directory."""

    firmware: Path      # OpenSBI fw_dynamic.bin for the generic platform
    kernel: Path        # the Linux Image a bootloader loads (uncompressed)
    modules_dir: Path   # the kernel's /lib/modules/<version> directory
    busybox: Path       # statically linked busybox


# --- Public API --------------------------------------------------------------

def cache_root() -> Path:
    """``$XDG_CACHE_HOME/hartvm``, or ``~/.cache/hartvm``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative paths in XDG_* variables are to be ignored.
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hartvm"


def package_dir(root: Path | None = None) -> Path:
    """The directory that holds the downloaded trixie riscv64 packages."""
    return Path(root or cache_root()) / "debian" / f"{SUITE}-{ARCH}"


def fetch(packages: list[str], progress: bool = True,
          root: Path | None = None) -> dict[str, Path]:
    """Download the ``.deb`` of each package (not their dependencies).

    Returns {package name: path of its .deb}. Packages already in the cache
    are reused without calling apt at all.
    """
    apt = _Apt(package_dir(root), progress)
    with apt.locked():
        found = {name: apt.cached_deb(name) for name in dict.fromkeys(packages)}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            found.update(apt.download(missing))
    return found


def resolve_kernel_package(progress: bool = True, root: Path | None = None) -> str:
    """The kernel image package that ``linux-image-riscv64`` depends on.

    For example ``linux-image-6.12.117+deb13-riscv64``; read from the
    (private) package index, which is downloaded if needed.
    """
    apt = _Apt(package_dir(root), progress)
    with apt.locked():
        apt.ensure_index()
        # apt-cache takes half a second: keep its answer while the index is the same.
        indexes = sorted((apt.apt_dir / "state" / "lists").glob("*_Packages*"))
        index_key = [[p.name, p.stat().st_mtime_ns] for p in indexes]
        answer = apt.apt_dir / "kernel-package.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            saved = json.loads(answer.read_text())
            if saved["index"] == index_key:
                return saved["package"]
        record = apt.show([KERNEL_METAPACKAGE])[KERNEL_METAPACKAGE]
        package = _kernel_dependency(record)
        answer.write_text(json.dumps({"index": index_key, "package": package}))
    return package


def _kernel_dependency(record: dict[str, str]) -> str:
    # Depends: linux-image-6.12.117+deb13-riscv64 (= 6.12.117-1)
    for alternatives in record.get("Depends", "").split(","):
        for dependency in alternatives.split("|"):
            name = dependency.split("(")[0].split(":")[0].strip()
            if name.startswith("linux-image-") and name != KERNEL_METAPACKAGE:
                return name
    raise HartvmError(f"the Debian package {KERNEL_METAPACKAGE} does not depend on a "
                      f"linux-image package (Depends: {record.get('Depends', '')!r}); {HINT}")


def extract(deb_path, member_glob) -> list[Path]:
    """Extract the files of a .deb whose paths match ``member_glob``.

    ``member_glob`` is an fnmatch pattern on the path inside the package
    (``usr/bin/busybox``, ``boot/vmlinux-*``; ``*`` also matches ``/``), or
    a list of them. Files go to a directory next to the .deb named after it
    (``foo_1.0_all.deb`` -> ``foo_1.0_all/usr/bin/...``); the extracted paths
    are returned. A second call with the same patterns does not unpack again.
    """
    deb = Path(deb_path)
    patterns = [member_glob] if isinstance(member_glob, str) else list(member_glob)
    patterns = [_member_name(p) for p in patterns]
    dest = deb.parent / deb.name.removesuffix(".deb")
    try:
        stat = deb.stat()
    except OSError as e:
        raise HartvmError(f"cannot read the Debian package {deb}: {e.strerror}") from None
    # The marker remembers what these patterns extracted from this very file
    # (size and mtime), so that re-runs skip decompressing the archive again.
    key = hashlib.sha256(json.dumps([patterns, stat.st_size, stat.st_mtime_ns])
                         .encode()).hexdigest()[:16]
    marker = dest / f".extracted-{key}.json"
    with _lock_file(deb.parent / ".lock"):
        with contextlib.suppress(OSError, ValueError):
            paths = [dest / name for name in json.loads(marker.read_text())]
            if all(os.path.lexists(p) for p in paths):
                return paths
        try:
            dest.mkdir(parents=True, exist_ok=True)
            names = _extract_members(deb, patterns, dest)
            marker.write_text(json.dumps(names))
        except (OSError, tarfile.TarError) as e:
            raise HartvmError(f"cannot extract {deb}: {e}") from None
    return [dest / name for name in names]


def opensbi_firmware(progress: bool = True, root: Path | None = None) -> Path:
    """OpenSBI's ``fw_dynamic.bin`` alone (``--bios default``), without the kernel."""
    deb = fetch([FIRMWARE_PACKAGE], progress, root)[FIRMWARE_PACKAGE]
    return _one(extract(deb, FIRMWARE_GLOB), FIRMWARE_PACKAGE, FIRMWARE_GLOB)


def default_guest(progress: bool = True, root: Path | None = None) -> GuestFiles:
    """Fetch (first time only) and extract the default guest's files."""
    kernel_package = resolve_kernel_package(progress, root)
    debs = fetch([FIRMWARE_PACKAGE, kernel_package, BUSYBOX_PACKAGE], progress, root)

    firmware = opensbi_firmware(progress, root)
    busybox = _one(extract(debs[BUSYBOX_PACKAGE], BUSYBOX_GLOBS),
                   BUSYBOX_PACKAGE, "bin/busybox")

    # The kernel package is large (about 110 MB): extract the image and the
    # modules in one pass over its data archive.
    extracted = extract(debs[kernel_package], KERNEL_GLOBS + MODULES_GLOBS)
    kernel = _one([p for p in extracted if p.is_file() and p.parent.name == "boot"],
                  kernel_package, "boot/vmlinux-*")
    version = kernel.name.split("-", 1)[1]
    modules = [p for p in extracted if p.is_dir() and p.name == version
               and p.parent.name == "modules"]
    modules_dir = _one(modules, kernel_package, f"lib/modules/{version}")
    return GuestFiles(firmware=firmware, kernel=_bootable_image(kernel, kernel_package),
                      modules_dir=modules_dir, busybox=busybox)


# --- apt with a private configuration ---------------------------------------

class _Apt:
    """apt-get and apt-cache confined to ``<package dir>/apt``."""

    def __init__(self, directory: Path, progress: bool):
        self.directory = Path(directory)
        self.apt_dir = self.directory / "apt"
        self.progress = progress
        self.configured = False
        self.mirror_uri = ""
        self.index_updated = False   # apt-get update ran in this session

    @contextlib.contextmanager
    def locked(self):
        """Serialize hartvm processes that share this cache."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with _lock_file(self.directory / ".lock"):
            yield

    def cached_deb(self, name: str) -> Path | None:
        # apt names a package <name>_<version>_<arch>.deb, and a package name
        # cannot contain "_", so this glob matches only that package.
        debs = sorted(self.directory.glob(f"{glob.escape(name)}_*.deb"),
                      key=lambda p: p.stat().st_mtime)
        return debs[-1] if debs else None

    def download(self, names: list[str]) -> dict[str, Path]:
        self.ensure_index()
        try:
            records = self.show(names)
        except HartvmError:
            # A package may be new in Debian since our index was downloaded.
            if self.index_updated:
                raise
            self.ensure_index(force=True)
            records = self.show(names)
        total = sum(int(r.get("Size", 0)) for r in records.values())
        what = names[0] if len(names) == 1 else f"{len(names)} packages"
        label = f"downloading {what} from Debian {SUITE} ({_size(total)})"
        # apt-get download writes to the current directory under the final
        # name: download into a scratch directory and move finished files
        # into the cache, so that an interrupted download is never taken
        # for a complete package.
        scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=self.directory))
        try:
            code, output = self.run(["apt-get", "download", *names], cwd=scratch,
                                    label=label, total=total)
            if code != 0 and not self.index_updated:
                # The mirror may have dropped the version our index lists.
                self.ensure_index(force=True)
                code, output = self.run(["apt-get", "download", *names], cwd=scratch,
                                        label=label, total=total)
            if code != 0:
                self.fail(f"apt-get download {' '.join(names)} failed", output)
            result = {}
            for deb in scratch.glob("*.deb"):
                name = deb.name.split("_", 1)[0]
                target = self.directory / deb.name
                os.replace(deb, target)
                result[name] = target
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        missing = [name for name in names if name not in result]
        if missing:
            raise HartvmError(f"apt-get download did not produce {', '.join(missing)}; {HINT}")
        return result

    def show(self, names: list[str]) -> dict[str, dict[str, str]]:
        """The index records of the candidate versions of ``names``."""
        # apt-cache fails ("E: No packages found") only if *none* of the
        # names is known; otherwise unknown and purely virtual names are
        # silently skipped. Either way the records tell which names exist.
        code, output = self.run(["apt-cache", "show", "--no-all-versions", *names])
        if code != 0 and "E: No packages found" not in output:
            self.fail("apt-cache show failed", output)
        records = {}
        for paragraph in output.split("\n\n"):
            fields = _parse_fields(paragraph.splitlines())
            if "Package" in fields:
                records.setdefault(fields["Package"], fields)
        missing = [name for name in names if name not in records]
        if missing:
            raise HartvmError(
                f"Debian {SUITE} has no {ARCH} package named {', '.join(missing)} "
                f"(in the index of {self.mirror_uri}); {HINT}")
        return records

    def ensure_index(self, force: bool = False) -> None:
        """Run ``apt-get update`` if the index is missing, old or forced."""
        sources_changed = self.configure()
        stamp = self.apt_dir / "updated"
        have_index = any((self.apt_dir / "state" / "lists").glob("*_Packages*"))
        fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < INDEX_MAX_AGE
        if have_index and fresh and not sources_changed and not force:
            return
        if self.index_updated:
            return
        code, output = self.run(["apt-get", "update"],
                                label=f"updating the Debian {SUITE} {ARCH} package index")
        have_index = any((self.apt_dir / "state" / "lists").glob("*_Packages*"))
        if code == 0 and have_index:
            stamp.touch()
            self.index_updated = True
        elif not have_index or sources_changed:
            self.fail(f"cannot download the Debian {SUITE} {ARCH} package index "
                      f"from {self.mirror_uri}", output)
        # else: offline, but the index we already have still works.

    def configure(self) -> bool:
        """Write the private apt configuration; True if the sources changed."""
        if self.configured:
            return False
        if shutil.which("apt-get") is None or shutil.which("apt-cache") is None:
            raise HartvmError("cannot fetch the default guest from Debian: apt-get is not "
                              f"installed on this host; {HINT}")
        uri, signed_by = host_mirror()
        self.mirror_uri = uri
        a = self.apt_dir
        for sub in ("state/lists/partial", "cache/archives/partial", "apt.conf.d",
                    "sources.list.d", "preferences.d", "log"):
            (a / sub).mkdir(parents=True, exist_ok=True)
        (a / "state" / "status").touch()   # "no packages installed"
        (a / "sources.list").touch()
        config = "\n".join([
            # Read by apt *instead of* /etc/apt/apt.conf (see APT_CONFIG in
            # apt.conf(5)); Dir::Etc::Parts keeps /etc/apt/apt.conf.d out too.
            f'Dir::State "{a}/state/";',
            f'Dir::State::status "{a}/state/status";',
            f'Dir::Cache "{a}/cache/";',
            f'Dir::Log "{a}/log/";',
            'Dir::Etc::main "/dev/null";',
            f'Dir::Etc::Parts "{a}/apt.conf.d/";',
            f'Dir::Etc::SourceList "{a}/sources.list";',
            f'Dir::Etc::SourceParts "{a}/sources.list.d/";',
            f'Dir::Etc::Preferences "{a}/preferences";',
            f'Dir::Etc::PreferencesParts "{a}/preferences.d/";',
            f'APT::Architecture "{ARCH}";',
            f'APT::Architectures {{ "{ARCH}"; }};',
            # Only the Packages index: no translations, and keep it compressed.
            'Acquire::Languages "none";',
            'Acquire::GzipIndexes "true";',
            # Make `apt-get update` fail when the index cannot be downloaded
            # (by default it only warns and exits 0).
            'APT::Update::Error-Mode "any";',
            *_host_proxy_settings(),
        ]) + "\n"
        _write_if_changed(a / "apt.conf", config)
        sources = "\n".join([
            "Types: deb",
            f"URIs: {uri}",
            f"Suites: {SUITE}",
            f"Components: {COMPONENT}",
            f"Architectures: {ARCH}",
            *([f"Signed-By: {signed_by}"] if signed_by else []),
        ]) + "\n"
        changed = _write_if_changed(a / "sources.list.d" / "debian.sources", sources)
        self.configured = True
        return changed

    def run(self, argv: list[str], cwd: Path | None = None, label: str | None = None,
            total: int = 0) -> tuple[int, str]:
        """Run an apt command; returns (exit status, its stdout and stderr)."""
        self.configure()
        env = dict(os.environ, APT_CONFIG=str(self.apt_dir / "apt.conf"), LC_ALL="C")
        env.pop("LANGUAGE", None)
        command = [argv[0], "-q", *argv[1:]]
        bar = _ProgressLine(label, total) if (label and self.progress) else None
        with tempfile.TemporaryFile() as out:
            try:
                if bar and bar.enabled:
                    # apt reports "dlstatus:<item>:<percent>:<text>" lines on
                    # the descriptor named by APT::Status-Fd.
                    read_end, write_end = os.pipe()
                    try:
                        process = subprocess.Popen(
                            [*command, "-o", f"APT::Status-Fd={write_end}"],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            cwd=cwd, env=env, pass_fds=(write_end,))
                    finally:
                        os.close(write_end)
                    with os.fdopen(read_end, errors="replace") as status:
                        bar.update(0.0)
                        for line in status:
                            parts = line.split(":", 3)
                            if parts[0] == "dlstatus" and len(parts) == 4:
                                with contextlib.suppress(ValueError):
                                    bar.update(float(parts[2]))
                    code = process.wait()
                else:
                    code = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, cwd=cwd, env=env).returncode
            except BaseException as e:
                if bar:
                    bar.finish(ok=False)
                if isinstance(e, OSError):
                    raise HartvmError(f"cannot run {argv[0]}: {e.strerror}; {HINT}") from None
                raise
            out.seek(0)
            output = out.read().decode(errors="replace")
        if bar:
            bar.finish(ok=code == 0)
        return code, output

    def fail(self, what: str, output: str):
        """Show apt's output (kept quiet until now) and raise one line."""
        sys.stderr.write(output if output.endswith("\n") or not output else output + "\n")
        sys.stderr.flush()
        # The most telling line: why a fetch failed (the indented line after
        # "Err:"), else apt's first error, else its first warning.
        lines = output.splitlines()
        causes = [b.strip() for a, b in zip(lines, lines[1:])
                  if a.startswith("Err:") and b.startswith(" ")]
        errors = [line for line in lines if line.startswith("E:")]
        warnings = [line for line in lines if line.startswith("W:")]
        best = (causes or errors or warnings or [""])[0]
        detail = f" ({best})" if best else ""
        raise HartvmError(f"{what}{detail}; {HINT}")


# --- The host's Debian mirror ------------------------------------------------

def host_mirror(apt_dir: Path = HOST_APT_DIR) -> tuple[str, str]:
    """(URI, Signed-By) of the first Debian archive source of the host.

    Reads sources.list and sources.list.d/*.list (one-line format) and
    sources.list.d/*.sources (deb822), in apt's order. Signed-By is the
    host's value (a keyring path, or an inline key block kept verbatim), the
    Debian archive keyring if the host has none, or "" if that is not
    installed either (then apt checks against the host's trusted.gpg.d).
    """
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    candidates = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for types, uris, suites, components, signed_by in entries:
            uri = next((u for u in uris if not u.startswith("cdrom:")), None)
            rank = _debian_rank(suites, signed_by)
            if "deb" in types and "main" in components and uri and rank is not None:
                candidates.append((rank, len(candidates), uri, signed_by))
    if not candidates:
        raise HartvmError(f"cannot fetch the default guest: no Debian archive source (suite "
                          f"such as bookworm or trixie, component main) in "
                          f"{apt_dir}/sources.list or {apt_dir}/sources.list.d; {HINT}")
    _, _, uri, signed_by = min(candidates)
    if not signed_by:
        signed_by = next((str(k) for k in DEBIAN_KEYRINGS if k.exists()), "")
    return uri, signed_by


def _debian_rank(suites: list[str], signed_by: str) -> int | None:
    """None if not a Debian archive suite; else lower is more certainly Debian."""
    names = {suite.removesuffix(suffix) for suite in suites for suffix in DEBIAN_SUFFIXES
             if suite.endswith(suffix)}
    if names & DEBIAN_CODENAMES or names & DEBIAN_ALIASES:
        if any(Path(p).name.startswith("debian-archive-") for p in signed_by.split(",")):
            return 0
        return 1 if names & DEBIAN_CODENAMES else 2
    return None


def _one_line_entries(text: str):
    """Entries of a sources.list: ``deb [opt=value ...] uri suite component...``."""
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        options = {}
        rest = rest.strip()
        if rest.startswith("["):
            inside, _, rest = rest[1:].partition("]")
            for option in inside.split():
                key, _, value = option.partition("=")
                options[key.lower()] = value
        words = rest.split()
        if len(words) >= 2:
            yield [kind], [words[0]], [words[1]], words[2:], options.get("signed-by", "")


def _deb822_entries(text: str):
    """Entries of a .sources file (deb822 stanzas, see sources.list(5))."""
    stanzas, current = [], []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if line.strip():
            current.append(line)
        elif current:
            stanzas.append(current)
            current = []
    if current:
        stanzas.append(current)
    for lines in stanzas:
        fields = _parse_fields(lines, keep_continuation=True)
        fields = {key.lower(): value for key, value in fields.items()}
        if fields.get("enabled", "yes").strip().lower() == "no":
            continue
        yield (fields.get("types", "").split(), fields.get("uris", "").split(),
               fields.get("suites", "").split(), fields.get("components", "").split(),
               fields.get("signed-by", "").strip(" \t"))


def _parse_fields(lines: list[str], keep_continuation: bool = False) -> dict[str, str]:
    """``Key: value`` lines with indented continuation lines (deb822)."""
    fields, key = {}, None
    for line in lines:
        if line[:1] in (" ", "\t"):
            if key is not None:
                # An inline Signed-By key block must be written back exactly.
                fields[key] += "\n" + (line if keep_continuation else line.strip())
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _host_proxy_settings() -> list[str]:
    """The host's apt proxy (and similar network) settings, as apt.conf lines.

    The private configuration leaves out the host's apt.conf.d, but a host
    that reaches its mirror through a proxy (apt-cacher-ng, a corporate
    proxy) needs the same settings here.
    """
    try:
        dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True,
                              env=dict(os.environ, LC_ALL="C"), timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    keep = ("Acquire::http::", "Acquire::https::", "Acquire::ftp::", "Acquire::socks5::",
            "Acquire::Retries ", "Acquire::ForceIPv4 ", "Acquire::ForceIPv6 ")
    return [line for line in dump.splitlines()
            if line.startswith(keep) and line.endswith(";")]


# --- .deb files --------------------------------------------------------------

def _member_name(name: str) -> str:
    """A path inside a package without its leading "./" or "/"."""
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _ar_members(f):
    """(name, offset, size) of each member of an ar archive (a .deb)."""
    if f.read(8) != b"!<arch>\n":
        raise HartvmError(f"{f.name} is not a Debian package (no ar header)")
    while True:
        header = f.read(60)
        if len(header) < 60:
            return
        name = header[:16].decode("ascii", "replace").rstrip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        offset = f.tell()
        yield name, offset, size
        f.seek(offset + size + (size & 1))   # members are 2-byte aligned


class _Slice(io.RawIOBase):
    """The bytes of one ar member, as a readable stream."""

    def __init__(self, f, offset: int, size: int):
        f.seek(offset)
        self._f, self._left = f, size

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._f.read(min(len(buffer), self._left))
        buffer[:len(data)] = data
        self._left -= len(data)
        return len(data)


def _extract_members(deb: Path, patterns: list[str], dest: Path) -> list[str]:
    """Extract the members of ``deb``'s data archive that match; their names."""
    with open(deb, "rb") as f:
        data = next(((name, offset, size) for name, offset, size in _ar_members(f)
                     if name.startswith("data.tar")), None)
        if data is None:
            raise HartvmError(f"{deb} has no data.tar member")
        name, offset, size = data
        compression = name[len("data.tar"):].lstrip(".")
        if compression not in ("", "xz", "gz", "bz2", "zst"):
            raise HartvmError(f"{deb}: unsupported data archive {name}")
        try:
            # Python reads xz, gzip and bzip2 itself, and zstd from 3.14 on.
            with tarfile.open(fileobj=_Slice(f, offset, size), mode="r|" + compression) as tar:
                return _extract_tar(tar, patterns, dest)
        except tarfile.CompressionError:
            pass
    # A zstd-compressed package and an older Python: let dpkg-deb decompress.
    if shutil.which("dpkg-deb") is None:
        raise HartvmError(f"cannot extract {deb}: its {name} needs Python 3.14 or dpkg-deb")
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
            names = _extract_tar(tar, patterns, dest)
        process.stdout.read()   # drain, so that dpkg-deb ends normally
        error = process.stderr.read().decode(errors="replace").strip()
    if process.returncode != 0:
        raise HartvmError(f"dpkg-deb --fsys-tarfile {deb} failed: {error}")
    return names


def _extract_tar(tar: tarfile.TarFile, patterns: list[str], dest: Path) -> list[str]:
    # The "data" filter (Python >= 3.11.4) refuses absolute paths, ".." and
    # links that leave the destination, and drops setuid bits and ownership.
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    names = []
    for member in tar:   # a stream: members come in archive order, once
        name = _member_name(member.name)
        if not name or not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if ".." in name.split("/"):
            continue
        member.name = name
        try:
            tar.extract(member, dest, **safe)
        except tarfile.TarError as e:
            if getattr(tarfile, "FilterError", None) and isinstance(e, tarfile.FilterError):
                continue   # e.g. a symlink to an absolute path: not needed here
            raise
        names.append(name)
    return names


# --- Helpers -----------------------------------------------------------------

def _one(paths: list[Path], package: str, what: str) -> Path:
    files = sorted(set(paths))
    if not files:
        raise HartvmError(f"the Debian package {package} has no {what}; {HINT}")
    return files[-1]


def _bootable_image(kernel: Path, package: str) -> Path:
    """The kernel file a bootloader loads: a RISC-V Linux ``Image``.

    Debian's riscv64 kernel is an uncompressed Image (with an EFI stub, so it
    also starts with "MZ"). Should a package ship a gzip-compressed Image,
    a decompressed copy is written next to it, since on RISC-V it is the
    bootloader that decompresses the kernel.
    """
    with open(kernel, "rb") as f:
        head = f.read(64)
    if head[:2] == b"\x1f\x8b":
        image = kernel.with_name("Image-" + kernel.name.split("-", 1)[1])
        if not image.exists():
            partial = image.with_name(image.name + ".partial")
            with gzip.open(kernel, "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(partial, image)
        kernel = image
        with open(kernel, "rb") as f:
            head = f.read(64)
    # The RISC-V boot image header has the magic "RSC\x05" at offset 0x38
    # (Documentation/arch/riscv/boot-image-header.rst).
    if head[0x38:0x3C] != b"RSC\x05":
        raise HartvmError(f"{kernel} (from {package}) is not a RISC-V Linux Image; {HINT}")
    return kernel


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
    return True


@contextlib.contextmanager
def _lock_file(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MB"
    return f"{n / 1024:.0f} kB"


class _ProgressLine:
    """One line on stderr, rewritten in place; only when stderr is a terminal."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def update(self, percent: float):
        if not self.enabled:
            return
        percent = max(0.0, min(100.0, percent))
        text = f"hartvm: {self.label}: {percent:3.0f}%"
        if self.total:
            text += f" ({_size(int(self.total * percent / 100))})"
        # Longer than the terminal, the line would wrap and "\r" would no
        # longer bring the cursor back to its start.
        width = shutil.get_terminal_size().columns - 1
        sys.stderr.write("\r" + text[:width] + "\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def finish(self, ok: bool):
        if self.shown:
            if ok:
                self.update(100.0)
                sys.stderr.write("\n")
            else:
                sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False
