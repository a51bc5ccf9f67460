"""A VM's shared folders: its virtio-9p device, the export table, the guest's mounts.

Every VM has the device (mount tag ``hartvm``), so that a VM restored from
any snapshot, the run pool's included, can take volumes (volumes.py). A
volume becomes an export under a name of its own ("0", "1", ... never
reused within a VM, so a guest's stale handle never meets another
directory), then the guest mounts it through the agent, as a command of
its own whose failure is reported. Volumes given to the VM stay mounted;
those of one command are unmounted after it (lazily, in the agent's own
shell) and leave the export table. Whenever a command ends, what was
written is made durable on the host (``P9Server.flush``: fsync of files
open for writing, syncfs of the exports written).
"""

import itertools
import os

from ..devices.virtio.p9 import VirtioP9
from ..errors import HartvmError
from ..guest.command import quote
from .flush import Chores
from .volumes import MOUNT_ROOT, Volume

TAG = "hartvm"
MSIZE = 512000          # the most Linux's virtio transport takes (net/9p/trans_virtio.c)
# The cache mode, for large messages. With the default cache=none every file is
# opened for direct I/O (fs/9p/fid.h, v9fs_fid_add_modes: P9L_DIRECT), netfs
# turns the user's buffer into one bio_vec per page (fs/netfs/iterator.c,
# netfs_extract_user_iter), and the virtio transport pins pages with
# iov_iter_get_pages_alloc2, which takes one bio_vec segment at a time
# (lib/iov_iter.c, first_bvec_segment), so p9_virtio_zc_request shrinks every
# Tread/Twrite to 4 KiB whatever the msize and the iounit (measured: 25,600
# messages for 100 MB, ~13,500 guest instructions each). cache=mmap
# (CACHE_FILE|CACHE_WRITEBACK) goes through the page cache instead: reads by
# readahead (ra_pages = msize - P9_IOHDRSZ, fs/9p/vfs_super.c) and writes by
# writeback, both in folio-queue iterators that pin many pages at once, so
# messages are ~500 KB. It stays coherent enough: without CACHE_META/LOOSE a
# dentry is dropped at its last use (always_delete_dentry), so an inode and its
# pages do not outlive the files open on it (close-to-open), and nothing is
# left dirty in the guest once no file is open for writing: the last close of
# a file opened for writing writes its pages back (fs/9p/vfs_dir.c,
# v9fs_dir_release: filemap_fdatawrite), as do a stat (v9fs_vfs_getattr_dotl)
# and munmap of a shared mapping. after_command relies on that: see
# ``_write_back``. QEMU's users pick the same mode for mmap support
# (qemu-options.hx, -virtfs; the kernel's Documentation/filesystems/9p.rst).
CACHE = "mmap"
# Guest instructions (per hart) that ending an interrupted command, or syncing
# files left open for writing, may take before the guest is given up on.
WRITE_BACK_BUDGET = 1_000_000_000


class SharedFolders:
    def __init__(self):
        self.device = VirtioP9(TAG)
        self.exports: dict[str, Volume] = {}       # name -> volume, as the server has them
        self.mounted: list[Volume] = []             # the VM's own, mounted for good
        self._names = itertools.count()
        # The VM ends after its command (a run pool's clone): the guest's unmounts
        # are then pure overhead, and skipped; the host still fsyncs.
        self.ephemeral = False
        self._writing_back = False

    def mount(self, vm, volumes: list[Volume], keep: bool = False) -> dict[str, Volume]:
        """Export ``volumes`` and mount them in ``vm``'s guest; returns their
        exports (name -> volume), for ``after_command``. ``keep``: the VM's own
        volumes, mounted for good."""
        added = {str(next(self._names)): volume for volume in volumes}
        if not added:
            return added
        self._set({**self.exports, **added})
        try:
            result = vm.run([b"sh", b"-c", mount_script(added)])
        except BaseException:
            self._set({name: v for name, v in self.exports.items() if name not in added})
            raise
        if result.returncode != 0:
            self._set({name: v for name, v in self.exports.items() if name not in added})
            message = result.stderr.decode(errors="replace").strip().splitlines()
            raise HartvmError(f"cannot mount the volumes in the guest: "
                              f"{message[-1] if message else f'status {result.returncode}'}")
        if keep:
            self.mounted += volumes
        return added

    def after_command(self, vm, exports: dict[str, Volume]) -> None:
        """After a command: have what the guest wrote reach the host (``_write_back``),
        detach the volumes the command had for itself in the guest (if the guest
        still answers, and the VM goes on), close their files on the host, and
        make what was written to any volume durable."""
        try:
            if not vm.closed and vm.agent.ready and not self._writing_back:
                self._write_back(vm)
                if exports and not self.ephemeral and not vm.agent.busy:
                    vm.run([b"sh", b"-c", unmount_script(exports.values())])
        finally:
            if exports:
                self._set({name: v for name, v in self.exports.items() if name not in exports})
            self.flush()

    def _write_back(self, vm) -> None:
        """Get the guest's dirty pages of volume files (cache=mmap, see CACHE) to the
        host. A file written and closed is there already (v9fs_dir_release), so
        only a file still open for writing can hold some; the server sees those
        as fids open for writing. Usually there are none and this costs nothing.
        Else: a command that still runs (it was interrupted) is killed, which
        closes its files as it exits; files still open after that (a process
        left in the background holds them) are written back by a guest ``sync``.
        Within a budget of guest instructions: a hung guest is given up."""
        server = self.device.server
        if not server.open_for_writing():
            return
        chores = Chores(vm, WRITE_BACK_BUDGET)
        self._writing_back = True
        try:
            chores.end_command(enough=lambda: not server.open_for_writing())
            if server.open_for_writing():
                chores.run(["sync"])
        finally:
            self._writing_back = False

    def _set(self, exports: dict[str, Volume]) -> None:
        self.device.server.set_exports({name: (volume.host, volume.readonly)
                                        for name, volume in exports.items()})
        self.exports = exports

    def flush(self) -> None:
        self.device.server.flush()

    def close(self) -> None:
        self.device.close()
        self.exports, self.mounted = {}, []


def mount_script(exports: dict[str, Volume]) -> bytes:
    """One line of shell: mount the export table's root unless it is mounted (a
    builtin read of /proc/mounts: a process costs the guest millions of
    instructions), then bind each export onto its guest directory."""
    root = quote(MOUNT_ROOT.encode())
    lines = [
        b'mounted=; while read -r _ dir _; do [ "$dir" = ' + root + b" ] && mounted=1; "
        b"done </proc/mounts",
    ]
    # One mkdir (a process) for every directory missing, none if all are there
    # (test is a builtin).
    directories = [root] + [quote(os.fsencode(volume.guest)) for volume in exports.values()]
    lines.append(b"set --; for dir in " + b" ".join(directories) + b'; do [ -d "$dir" ] || '
                 b'set -- "$@" "$dir"; done')
    lines.append(b'[ $# -eq 0 ] || mkdir -p -- "$@" || exit 1')
    lines.append(b'[ -n "$mounted" ] || mount -t 9p -o trans=virtio,version=9p2000.L,'
                 b"msize=%d,cache=%s %s " % (MSIZE, CACHE.encode(), TAG.encode()) + root +
                 b" || exit 1")
    for name, volume in exports.items():
        source = quote(f"{MOUNT_ROOT}/{name}".encode())
        target = quote(os.fsencode(volume.guest))
        lines.append(b"mount -o bind " + source + b" " + target + b" || exit 1")
    return b"; ".join(lines)


def unmount_script(volumes) -> bytes:
    """One line of shell: detach bind mounts, lazily (a process the command left
    running may still use them)."""
    return b"; ".join(b"umount -l -- " + quote(os.fsencode(volume.guest)) + b" 2>/dev/null"
                      for volume in volumes) + b"; true"
