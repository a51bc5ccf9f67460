"""Volumes: host directories shared into the guest (``-v HOST_DIR:GUEST_DIR[:ro]``).

Every VM has one virtio-9p device with the mount tag ``hartvm``
(devices/virtio/p9.py), also the run pool's booted snapshot, so that the
volumes of a command need no new device: the VM gives the device's server
an export table (export names "0", "1", ... chosen by ``aname``) before
the command runs. Linux's virtio transport lets a tag be mounted only once,
so the guest mounts the table's synthetic root once, at ``MOUNT_ROOT``
(aname empty), and bind-mounts each export onto its guest directory. The
mount caches file pages (``cache=mmap``, for 500 KB messages instead of
4 KiB ones; why, and how nothing written stays in the guest after a
command: shared_folders.py).

This module parses and checks specs, and imports nothing heavy (the CLI and
the client use it); shared_folders.py does the VM's part.
"""

import os
import posixpath
from dataclasses import dataclass

from ..errors import HartvmError

MOUNT_ROOT = "/run/hartvm-volumes"       # where the guest mounts the export table
MAX_VOLUMES = 64


@dataclass(frozen=True)
class Volume:
    host: str           # absolute, an existing directory
    guest: str          # absolute, normalised, not "/"
    readonly: bool = False

    def as_request(self) -> list:
        return [self.host, self.guest, self.readonly]


def parse_volume(spec) -> Volume:
    """``"HOST_DIR:GUEST_DIR[:ro|:rw]"``, a (host, guest[, "ro"|bool]) tuple or a
    Volume, checked: the host directory exists, the guest path is absolute."""
    if isinstance(spec, Volume):
        parts = [spec.host, spec.guest, spec.readonly]
    elif isinstance(spec, str):
        parts = spec.split(":")
    elif isinstance(spec, (tuple, list)):
        parts = [os.fspath(part) if isinstance(part, os.PathLike) else part for part in spec]
    else:
        raise HartvmError(f"bad volume {spec!r}: use HOST_DIR:GUEST_DIR[:ro]")
    if len(parts) not in (2, 3) or not all(isinstance(part, str) for part in parts[:2]):
        raise HartvmError(f"bad volume {spec!r}: use HOST_DIR:GUEST_DIR[:ro]")
    host, guest = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else False
    if mode in ("ro", True):
        readonly = True
    elif mode in ("rw", False):
        readonly = False
    else:
        raise HartvmError(f"bad volume {spec!r}: the suffix must be :ro or :rw, not {mode!r}")
    if not host or "\0" in host:
        raise HartvmError(f"bad volume {spec!r}: no host directory")
    host = os.path.abspath(host)
    if not os.path.isdir(host):
        what = "does not exist" if not os.path.exists(host) else "is not a directory"
        raise HartvmError(f"volume {host}: {what}")
    if not guest.startswith("/") or "\0" in guest:
        raise HartvmError(f"bad volume {spec!r}: the guest directory must be an absolute path")
    guest = posixpath.normpath(guest)
    if guest == "/" or guest == MOUNT_ROOT or guest.startswith(MOUNT_ROOT + "/"):
        raise HartvmError(f"bad volume {spec!r}: {guest} cannot be a volume's guest directory")
    return Volume(host, guest, readonly)


def parse_volumes(specs, taken=()) -> list[Volume]:
    """Each spec parsed; two volumes (or one of ``taken``) on one guest directory
    are refused."""
    if isinstance(specs, (str, Volume)):
        specs = [specs]
    volumes = [parse_volume(spec) for spec in specs or ()]
    seen = {volume.guest for volume in taken}
    for volume in volumes:
        if volume.guest in seen:
            raise HartvmError(f"two volumes on the guest directory {volume.guest}")
        seen.add(volume.guest)
    if len(seen) > MAX_VOLUMES:
        raise HartvmError(f"at most {MAX_VOLUMES} volumes")
    return volumes


def from_request(value) -> list[Volume]:
    """Volumes as a run request carries them (``as_request``): untrusted JSON."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(
            isinstance(item, list) and len(item) == 3 and isinstance(item[2], bool)
            for item in value):
        raise HartvmError("bad exec request: volumes")
    return parse_volumes([tuple(item) for item in value])
