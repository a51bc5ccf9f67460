"""What every MMIO device shares: accepted access sizes and the unknown-register log.

A device sees offsets into its own range, never absolute addresses:
``read(offset, size) -> int`` and ``write(offset, size, value)``. Registers
it does not know read as zero and ignore writes; each such offset is
logged once (the first few only), so a misbehaving guest can neither flood
the host log nor grow host memory.
"""

import logging

log = logging.getLogger("hartvm.devices")


MAX_LOGGED = 64   # distinct unknown registers logged per device, then silence


def saved(state, name: str, kind: type, limit: int | None = None):
    """``state[name]`` from a snapshot (untrusted), checked to be a ``kind``
    and, for an int with a ``limit``, to lie in ``range(limit)``."""
    if not isinstance(state, dict) or name not in state:
        raise ValueError(f"{name} is missing")
    value = state[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{name} is not a {kind.__name__}")
    if limit is not None and not 0 <= value < limit:
        raise ValueError(f"{name} = {value} is out of range")
    return value


class Device:
    access_sizes = frozenset({1, 2, 4, 8})
    SAVE_VERSION = 1   # of the dict save() returns (the snapshot section version)

    def __init__(self):
        self._unknown_logged: set[tuple[str, int]] = set()

    def reset(self) -> None:
        """Return to the power-on state (a machine reset)."""

    def unknown(self, kind: str, offset: int) -> int:
        if len(self._unknown_logged) < MAX_LOGGED and (kind, offset) not in self._unknown_logged:
            self._unknown_logged.add((kind, offset))
            log.info("%s: %s of unknown register at offset %#x ignored",
                     type(self).__name__, kind, offset)
        return 0

    def read(self, offset: int, size: int) -> int:
        return self.unknown("read", offset)

    def write(self, offset: int, size: int, value: int) -> None:
        self.unknown("write", offset)

    def save(self) -> dict:
        """The device's state: ints, bools, str, bytes, lists, dicts, numpy arrays."""
        return {}

    def restore(self, state: dict) -> None:
        """Load ``save()``'s output from a snapshot; raise ValueError if it is invalid."""
