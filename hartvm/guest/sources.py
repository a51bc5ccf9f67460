"""What the private apt (apt.py) takes from the host's apt: its Debian mirror and proxy.

``host_mirror`` finds the Debian archive among the host's sources
(sources.list and sources.list.d, one-line and deb822 formats) and the
keyring that signs it; ``host_proxy_settings`` reads the host's proxy
settings from ``apt-config dump``. Nothing else of the host's apt
configuration is used.
"""

import os
import subprocess
from pathlib import Path

from ..errors import HartvmError

# The advice that ends every error about fetching the default guest (this
# module is the one the others import, so it lives here).
HINT = "--kernel/--initrd/--bios accept local files"

HOST_APT_DIR = Path("/etc/apt")
# The keyring of the debian-archive-keyring package: .gpg up to bookworm,
# .pgp from trixie on.
DEBIAN_KEYRINGS = (Path("/usr/share/keyrings/debian-archive-keyring.gpg"),
                   Path("/usr/share/keyrings/debian-archive-keyring.pgp"))

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
        fields = parse_fields(lines, keep_continuation=True)
        fields = {key.lower(): value for key, value in fields.items()}
        if fields.get("enabled", "yes").strip().lower() == "no":
            continue
        yield (fields.get("types", "").split(), fields.get("uris", "").split(),
               fields.get("suites", "").split(), fields.get("components", "").split(),
               fields.get("signed-by", "").strip(" \t"))


def parse_fields(lines: list[str], keep_continuation: bool = False) -> dict[str, str]:
    """``Key: value`` lines with indented continuation lines (deb822).

    The format of .sources files and of apt-cache's records alike.
    """
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


def host_proxy_settings() -> list[str]:
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
