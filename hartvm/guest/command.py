"""The shell script the guest agent runs for a command (see agent.py): argv,
environment and working directory checked and quoted. Light (no numpy), so
that a client (client.py) refuses what the VM would, before it sends anything.
"""

import os
import re

from ..errors import HartvmError

ENV_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*\Z")


def quote(word: bytes) -> bytes:
    """Shell quoting that keeps a script on one line: POSIX single quotes (every
    byte stands for itself), or for a word with a newline busybox ash's ``$'...'``."""
    if b"\n" in word:
        escaped = word.replace(b"\\", b"\\\\").replace(b"'", b"\\'").replace(b"\n", b"\\n")
        return b"$'" + escaped + b"'"
    return b"'" + word.replace(b"'", b"'\\''") + b"'"


def _bytes(value, what: str) -> bytes:
    """A word of the script: str, bytes or a path, as subprocess takes them (so
    that ``None`` or a number is an error, not the text "None")."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, (str, bytes)):
        raise HartvmError(f"{what} {value!r} is a {type(value).__name__}, not text")
    data = value if isinstance(value, bytes) else value.encode()
    if b"\0" in data:
        raise HartvmError(f"{what} {value!r} contains a NUL byte")
    return data


def command_script(argv, env=None, cwd=None, runner: bytes = b"") -> bytes:
    """The shell script that runs ``argv`` with extra ``env`` in ``cwd``: the
    command replaces the shell, so its status is the shell's status.
    ``runner``: what runs the command instead of ``exec`` (see IMAGE_RUNNER)."""
    if not argv:
        raise HartvmError("no command given")
    if env is not None and not isinstance(env, dict):
        raise HartvmError(f"env must be a dict of names to values, not a {type(env).__name__}")
    lines = []
    if cwd is not None:
        lines.append(b"cd -- " + quote(_bytes(cwd, "working directory")) + b" || exit 126")
    for name, value in (env or {}).items():
        name = _bytes(name, "environment variable")
        if not ENV_NAME.match(name):
            raise HartvmError(f"bad environment variable name {name.decode(errors='replace')!r}")
        lines.append(b"export " + name + b"=" + quote(_bytes(value, f"value of {name!r}")))
    words = [quote(_bytes(arg, "argument")) for arg in argv]
    lines.append(b"command -v -- " + words[0] + b" >/dev/null || { printf 'hartvm: %s: "
                 b"command not found\\n' " + words[0] + b" >&2; exit 127; }")
    lines.append((runner or b"exec ") + b" ".join(words))
    return b"; ".join(lines)
