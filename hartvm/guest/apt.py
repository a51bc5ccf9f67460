"""apt-get and apt-cache with a private configuration, for Debian trixie riscv64.

apt runs with its own package lists, cache, sources and configuration
directory, all under ``<package dir>/apt``, so the host's apt state (its
lists, its cache, its installed packages) is neither used nor modified, and
the host's apt hooks (``APT::Update::Post-Invoke`` and friends) never run.
Only three things come from the host (see sources.py): the mirror URI and
its ``Signed-By`` keyring (from the host's sources) and its proxy settings
(from ``apt-config dump``). apt's output is kept quiet, and shown only when
it fails; a download shows a progress line (progress.py).
"""

import contextlib
import fcntl
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import HartvmError
from .progress import ProgressLine, format_size
from .sources import HINT, host_mirror, host_proxy_settings, parse_fields

SUITE = "trixie"
COMPONENT = "main"
ARCH = "riscv64"

# How long a downloaded package index is trusted before `apt-get update`.
INDEX_MAX_AGE = 7 * 24 * 3600


class Apt:
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
        with lock_file(self.directory / ".lock"):
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
        label = f"downloading {what} from Debian {SUITE} ({format_size(total)})"
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
            fields = parse_fields(paragraph.splitlines())
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
            *host_proxy_settings(),
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
        bar = ProgressLine(label, total) if (label and self.progress) else None
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
def lock_file(path: Path):
    """Hold an exclusive lock on ``path`` (created if needed).

    Apt.locked and debian.extract lock the same ``<package dir>/.lock``, so
    that hartvm processes sharing the cache neither run apt nor unpack a
    package at the same time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
