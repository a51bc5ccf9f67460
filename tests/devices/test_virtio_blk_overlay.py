"""The virtio-blk copy-on-write overlay: a shared base image that is never written.

Requests are played through a real VirtioMMIO transport and split queue (as
in test_virtio.py); the overlay's own guarantees (sparse files, forks that
do not see each other, snapshots that restore the same disk) are checked on
the host files and, for the larger cases, through the Block's read helper.
"""

import os
import random
import struct

import pytest

from test_virtio import AVAIL, BASE, DATA, DESC, QUEUE, setup

from hartvm.devices.virtio import mmio
from hartvm.devices.virtio.blk import CLUSTER, SECTOR, Block

HEADER, STATUS = BASE + 0x4000, BASE + 0x8000
IN, OUT, FLUSH = 0, 1, 4
OK, IOERR = 0, 1


class Driver:
    """A virtio-blk driver played from Python: one queue, one request at a time."""

    def __init__(self, block):
        self.ram, self.device, _ = setup(block)        # the driver's set-up of test_virtio.py
        self.requests = 0

    def descriptor(self, index, addr, length, flags, next_index=0):
        self.ram.write(DESC + 16 * index, struct.pack("<QIHH", addr, length, flags, next_index))

    def request(self, kind, sector, payload=b"", read_size=0) -> int:
        """Send one request; returns its status byte."""
        self.ram.write(HEADER, struct.pack("<IIQ", kind, 0, sector))
        index = 0
        self.descriptor(index, HEADER, 16, 1, index + 1)
        if payload:
            self.ram.write(DATA, payload)
            index += 1
            self.descriptor(index, DATA, len(payload), 1, index + 1)
        if read_size:
            index += 1
            self.descriptor(index, DATA, read_size, 2 | 1, index + 1)
        self.descriptor(index + 1, STATUS, 1, 2)
        self.ram.write(STATUS, b"\xff")
        self.ram.write(AVAIL + 4 + 2 * (self.requests % QUEUE), struct.pack("<H", 0))
        self.requests += 1
        self.ram.write(AVAIL + 2, struct.pack("<H", self.requests & 0xFFFF))
        self.device.write(0x050, 4, 0)
        assert not self.device.read(0x070, 4) & mmio.STATUS_NEEDS_RESET
        return self.ram.read(STATUS, 1)[0]

    def read(self, sector, size) -> bytes:
        assert self.request(IN, sector, read_size=size) == OK
        return self.ram.read(DATA, size)

    def write(self, sector, data) -> None:
        assert self.request(OUT, sector, payload=data) == OK


def base_image(tmp_path, size=8 * CLUSTER, seed=1):
    """A base image of random bytes (so that a wrong cluster shows)."""
    path = tmp_path / "base.img"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


@pytest.fixture
def disk(tmp_path):
    """(base path, its contents, a Block with an empty overlay, a driver for it)."""
    path = base_image(tmp_path)
    content = path.read_bytes()
    block = Block(str(path))
    block.use_overlay(str(tmp_path / "overlay"))
    yield path, content, block, Driver(block)
    block.close()


def test_reads_before_any_write_see_the_base(disk):
    path, content, block, driver = disk
    assert driver.read(0, 3 * CLUSTER) == content[:3 * CLUSTER]
    assert driver.read(13, 2 * SECTOR) == content[13 * SECTOR:15 * SECTOR]
    assert block.written_clusters == bytes(1)


def test_partial_cluster_write_keeps_the_rest_of_the_cluster(disk):
    path, content, block, driver = disk
    driver.write(9, b"\xAA" * SECTOR)                   # the second sector of cluster 1
    expected = content[:9 * SECTOR] + b"\xAA" * SECTOR + content[10 * SECTOR:]
    assert driver.read(0, len(content)) == expected
    assert block.written_clusters == bytes([0b10])
    assert driver.request(FLUSH, 0) == OK
    assert path.read_bytes() == content                 # the base is untouched
    with pytest.raises(OSError):                        # and its fd can no longer write
        os.pwrite(block.fd, b"x", 0)


def test_write_across_clusters_marks_each_of_them(disk):
    path, content, block, driver = disk
    data = bytes(range(256)) * 20                       # 5120 bytes from cluster 0's last sector
    driver.write(7, data)
    expected = content[:7 * SECTOR] + data + content[7 * SECTOR + len(data):]
    assert driver.read(0, len(content)) == expected
    assert block.written_clusters == bytes([0b111])
    assert path.read_bytes() == content


def test_overlay_follows_a_model_disk_under_random_writes(tmp_path):
    size = 10 * SECTOR + 3 * CLUSTER                    # the last cluster is a partial one
    path = base_image(tmp_path, size)
    model = bytearray(path.read_bytes())
    block = Block(str(path))
    block.use_overlay(str(tmp_path / "overlay"))
    rng = random.Random(7)
    for _ in range(200):
        sector = rng.randrange(size // SECTOR)
        count = rng.randint(1, size // SECTOR - sector)
        data = rng.randbytes(count * SECTOR)
        block._write(sector * SECTOR, data)
        model[sector * SECTOR:sector * SECTOR + len(data)] = data
        start = rng.randrange(size // SECTOR) * SECTOR
        assert block._read(start, size - start) == model[start:]
    block.close()
    assert path.read_bytes() != model


def test_overlay_file_is_sparse(tmp_path):
    path = tmp_path / "big.img"
    with open(path, "wb") as image:
        image.truncate(256 << 20)
    block = Block(str(path))
    block.use_overlay(str(tmp_path / "overlay"))
    driver = Driver(block)
    driver.write(1000, b"\x55" * SECTOR)
    assert driver.read(1000, SECTOR) == b"\x55" * SECTOR
    overlay = os.stat(tmp_path / "overlay")
    assert overlay.st_size == 256 << 20
    assert overlay.st_blocks * 512 <= 64 << 10
    block.copy_overlay(str(tmp_path / "copy"))
    assert os.stat(tmp_path / "copy").st_blocks * 512 <= 64 << 10
    block.close()


def test_fork_overlay_gives_independent_disks_starting_from_the_parent(tmp_path):
    path = base_image(tmp_path)
    content = path.read_bytes()
    block = Block(str(path))
    block.use_overlay(str(tmp_path / "parent"))
    block._write(0, b"P" * SECTOR)
    parent_overlay = (tmp_path / "parent").read_bytes()
    pid = os.fork()
    if pid == 0:                                        # the child: own overlay, own writes
        status = 1
        try:
            block.fork_overlay(str(tmp_path / "child"))
            block._write(SECTOR, b"C" * SECTOR)
            if block._read(0, 2 * SECTOR) == b"P" * SECTOR + b"C" * SECTOR:
                status = 0
        finally:
            os._exit(status)
    assert os.waitpid(pid, 0)[1] == 0
    assert (tmp_path / "parent").read_bytes() == parent_overlay
    assert block._read(0, 2 * SECTOR) == b"P" * SECTOR + content[SECTOR:2 * SECTOR]
    block._write(2 * SECTOR, b"Q" * SECTOR)             # the parent goes on, unseen by the child
    child_overlay = (tmp_path / "child").read_bytes()[:3 * SECTOR]
    assert child_overlay == b"P" * SECTOR + b"C" * SECTOR + content[2 * SECTOR:3 * SECTOR]
    assert path.read_bytes() == content
    block.close()


def test_fork_overlay_without_an_overlay_starts_empty_over_the_base(tmp_path):
    path = base_image(tmp_path)
    content = path.read_bytes()
    block = Block(str(path))
    block.fork_overlay(str(tmp_path / "child"))
    assert block.overlay_path == str(tmp_path / "child")
    assert block.written_clusters == bytes(1)
    block._write(0, b"C" * SECTOR)
    assert path.read_bytes() == content
    block.close()


def test_fork_overlay_leaves_the_old_overlay_alone(tmp_path):
    path = base_image(tmp_path)
    block = Block(str(path))
    block.use_overlay(str(tmp_path / "one"))
    block._write(CLUSTER, b"1" * SECTOR)
    block.fork_overlay(str(tmp_path / "two"))
    assert block.written_clusters == bytes([0b10])
    block._write(CLUSTER, b"2" * SECTOR)
    assert (tmp_path / "one").read_bytes()[CLUSTER:CLUSTER + SECTOR] == b"1" * SECTOR
    assert block._read(CLUSTER, SECTOR) == b"2" * SECTOR
    block.close()


def test_copy_overlay_then_use_overlay_restores_the_same_disk(disk, tmp_path):
    path, content, block, driver = disk
    driver.write(3, b"\x11" * 3 * SECTOR)
    driver.write(40, b"\x22" * CLUSTER)
    block.copy_overlay(str(tmp_path / "snapshot"))
    clusters = block.written_clusters
    view = driver.read(0, len(content))
    assert os.path.getsize(tmp_path / "snapshot") == len(content)

    restored = Block(str(path))
    restored.use_overlay(str(tmp_path / "snapshot"), clusters)
    assert Driver(restored).read(0, len(content)) == view
    restored.close()
    driver.write(3, b"\x33" * SECTOR)                   # the snapshot is a copy, not a link
    assert (tmp_path / "snapshot").read_bytes()[3 * SECTOR:4 * SECTOR] == b"\x11" * SECTOR


@pytest.mark.parametrize("clusters", [b"", bytes(2)])    # 8 clusters: exactly one byte
def test_bad_bitmap_length_is_refused(tmp_path, clusters):
    path = base_image(tmp_path)
    (tmp_path / "overlay").write_bytes(bytes(8 * CLUSTER))
    block = Block(str(path))
    with pytest.raises(ValueError, match="need 1"):
        block.use_overlay(str(tmp_path / "overlay"), clusters)
    assert block.overlay_path is None
    block.use_overlay(str(tmp_path / "overlay"), bytes(1))
    assert block.overlay_path == str(tmp_path / "overlay")
    block.close()


def test_bad_saved_overlays_are_refused(tmp_path):
    path = base_image(tmp_path, 5 * CLUSTER)            # 5 clusters: 3 bits of padding
    content = path.read_bytes()
    block = Block(str(path))
    (tmp_path / "short").write_bytes(bytes(CLUSTER))
    with pytest.raises(ValueError, match="past the end"):
        block.use_overlay(str(tmp_path / "short"), bytes([0b100000]))
    with pytest.raises(ValueError, match="bytes"):      # the file is not the disk's size
        block.use_overlay(str(tmp_path / "short"), bytes(1))
    with pytest.raises(FileNotFoundError):
        block.use_overlay(str(tmp_path / "missing"), bytes(1))
    with pytest.raises(ValueError, match="base"):       # would write, or truncate, the base
        block.use_overlay(str(path))
    with pytest.raises(ValueError, match="no overlay"):
        block.copy_overlay(str(tmp_path / "copy"))
    block.use_overlay(str(tmp_path / "overlay"))
    with pytest.raises(ValueError, match="current overlay"):
        block.copy_overlay(str(tmp_path / "overlay"))
    assert os.path.getsize(tmp_path / "overlay") == len(content)
    block.close()
    assert path.read_bytes() == content


def test_read_only_disk_refuses_an_overlay(tmp_path):
    block = Block(str(base_image(tmp_path)), readonly=True)
    with pytest.raises(ValueError, match="read-only"):
        block.use_overlay(str(tmp_path / "overlay"))
    assert not (tmp_path / "overlay").exists()
    block.close()


def test_requests_outside_the_disk_still_fail(disk):
    path, content, block, driver = disk
    sectors = len(content) // SECTOR
    assert driver.request(IN, sectors - 1, read_size=2 * SECTOR) == IOERR
    assert driver.request(OUT, sectors - 1, payload=b"\x01" * 2 * SECTOR) == IOERR
    assert driver.request(OUT, 1 << 60, payload=b"\x01" * SECTOR) == IOERR
    assert block.written_clusters == bytes(1)
    assert driver.request(OUT, sectors - 1, payload=b"\x01" * SECTOR) == OK


def test_a_host_file_that_shrinks_is_an_io_error_not_a_crash(disk):
    path, content, block, driver = disk
    os.truncate(path, CLUSTER)
    assert driver.request(IN, 8, read_size=SECTOR) == IOERR
    assert driver.request(OUT, 9, payload=b"\x01" * SECTOR) == IOERR  # the copy-up fails
    assert driver.read(0, SECTOR) == content[:SECTOR]


def test_close_closes_every_file(tmp_path):
    block = Block(str(base_image(tmp_path)))
    block.use_overlay(str(tmp_path / "overlay"))
    fds = block.fd, block._overlay_fd
    block.close()
    block.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_disk_larger_than_its_base_reads_zeros_past_it_and_keeps_the_base(tmp_path):
    base = tmp_path / "base.img"
    base.write_bytes(b"\x11" * (3 * CLUSTER + SECTOR))     # ends inside a cluster
    block = Block(str(base), overlay=str(tmp_path / "overlay"), size=16 * CLUSTER)
    driver = Driver(block)
    assert struct.unpack("<Q", block.config()[:8])[0] == 16 * CLUSTER // SECTOR
    end = 3 * CLUSTER // SECTOR
    assert driver.read(end, 2 * SECTOR) == b"\x11" * SECTOR + bytes(SECTOR)
    assert driver.read(15 * CLUSTER // SECTOR, CLUSTER) == bytes(CLUSTER)
    driver.write(end + 1, b"\x22" * SECTOR)                 # the cluster the base ends in
    driver.write(15 * CLUSTER // SECTOR, b"\x33" * SECTOR)  # far past the base
    assert driver.read(end, 3 * SECTOR) == b"\x11" * SECTOR + b"\x22" * SECTOR + bytes(SECTOR)
    assert driver.read(15 * CLUSTER // SECTOR, SECTOR) == b"\x33" * SECTOR
    assert base.read_bytes() == b"\x11" * (3 * CLUSTER + SECTOR)     # never written
    assert os.path.getsize(tmp_path / "overlay") == 16 * CLUSTER
    block.close()
