"""Errors that hartvm reports to users as one clear line.

A message often echoes what the user gave (a path, a name, a value read from
a snapshot), and that may hold a newline, an escape sequence or a million
list items. ``shown`` renders such a value for a message; ``HartvmError``
keeps its message to one line of at most MESSAGE_LIMIT characters whatever
it echoes, so that no value can pass for more lines of hartvm's own or drive
the user's terminal (issue 16). ``GuestError`` (vmm/results.py) is the one
exception: it adds the guest's last console lines, each escaped and marked.
"""

import os
import reprlib

MESSAGE_LIMIT = 2000        # characters of a message: what a person can still read
SHOWN_LIMIT = 200           # characters of one value a message echoes

_short = reprlib.Repr()
_short.maxstring = _short.maxother = SHOWN_LIMIT
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 8


def escape(text: str) -> str:
    """Control characters (C0, DEL, C1) and lone surrogates as Python escapes;
    tabs stay."""
    return "".join(c if c == "\t" or c.isprintable() else
                   (repr(c)[1:-1] if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in text)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def shown(value, limit: int = SHOWN_LIMIT) -> str:
    """``value`` as a message shows it: a path or string as its text, anything
    else as a short repr (a huge list or array is not rendered whole), on one
    line, cut at ``limit`` characters."""
    if isinstance(value, os.PathLike):
        try:
            value = os.fspath(value)
        except Exception:       # noqa: BLE001 - a hostile __fspath__
            value = object.__repr__(value)
    if isinstance(value, bytes):
        value = os.fsdecode(value[:limit * 4])
    text = value[:limit * 4] if isinstance(value, str) else _short.repr(value)
    return cut(escape(text), limit)


def quoted(value, limit: int = SHOWN_LIMIT) -> str:
    """``shown``, in quotes if it is a string (as ``repr`` shows a name)."""
    return f"'{shown(value, limit)}'" if isinstance(value, str) else shown(value, limit)


class HartvmError(Exception):
    """A problem with what the user asked for (bad file, bad size, ...)."""

    def __str__(self) -> str:
        return cut(escape(super().__str__()), MESSAGE_LIMIT)
