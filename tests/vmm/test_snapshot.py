"""Snapshots: the format, save -> restore -> compare, restored guests, bad snapshots.

One booted guest is snapshotted once; the tests restore that snapshot (or
damaged copies of it).
"""

import os
import shutil
import struct
import zlib

import numpy as np
import pytest

import hartvm
from conftest import smaps_overlapping
from hartvm.board.virt import MEMORY_MAP
from hartvm.cpu import layout as L
from hartvm.vmm import snapshot
from hartvm.vmm.snapshot import SnapshotError

EPOCH_NS = 1_800_000_000 * 10**9
SEED = bytes(range(32))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A booted guest (which wrote a file before its snapshot) and its snapshot."""
    path = tmp_path_factory.mktemp("snapshots") / "booted"
    with hartvm.VM(memory="256M", progress=False) as vm:
        vm.run(["sh", "-c", "echo before-snapshot > /root/marker"], check=True)
        vm.snapshot(path)
        yield vm, path


# --- the encoding ---------------------------------------------------------------

def test_values_round_trip():
    value = {"int": -(2**70), "big": 2**64 - 1, "flags": [True, False, None], "text": "é",
             "data": b"\0\xff", "nested": {"array": np.arange(6, dtype=np.int64).reshape(2, 3)}}
    decoded = snapshot.decode(snapshot.encode(value))
    assert decoded["nested"]["array"].tolist() == [[0, 1, 2], [3, 4, 5]]
    del decoded["nested"], value["nested"]
    assert decoded == value


@pytest.mark.parametrize("data", [b"", b"X", b"I\x09\x01", b"B" + struct.pack("<Q", 2**60),
                                  b"L" + struct.pack("<I", 5) + b"N", b"A\x09\x00",
                                  b"D\x01\x00\x00\x00I\x01\x01N", b"NN", b"L\x01\x00\x00\x00" * 40])
def test_malformed_values_are_refused(data):
    with pytest.raises(SnapshotError):
        snapshot.decode(data)


# --- save -> restore -> compare ---------------------------------------------------

def test_every_component_comes_back_and_a_clone_gets_a_new_identity(saved):
    vm, path = saved
    original = dict((name, value) for name, _, value in snapshot.machine_sections(vm.machine))
    with hartvm.VM.restore(path, hostname="clone") as clone:
        restored = dict((name, value) for name, _, value in
                        snapshot.machine_sections(clone.machine))
    assert set(original) == set(restored) >= {"machine", "hart0", "rom", "rtc", "plic",
                                               "uart0", "vmgenid", "console", "rng"}
    # A clone differs in its identity: the generation ID and its interrupt (pending in
    # the PLIC, so the hart's external interrupt line is up), virtio-rng's seed, the clock.
    identity = {"vmgenid", "plic", "rng", "rtc"}
    for name in set(original) - identity:
        if name.startswith("hart"):
            for state in original[name]["state"], restored[name]["state"]:
                state[L.TLB:] = 0           # a cache, dropped by a restore
                state[L.SEIP_LINE] = 0
        assert _equal(original[name], restored[name]), name
    for name in identity:
        assert not _equal(original[name], restored[name]), name
    assert restored["plic"]["pending"][MEMORY_MAP["vmgenid"].irq]


def _equal(a, b) -> bool:
    return snapshot.encode(a) == snapshot.encode(b)


def test_a_restored_guest_keeps_its_files_and_answers_as_a_new_host(saved):
    _, path = saved
    with hartvm.VM.restore(path, hostname="clone-1") as clone:
        result = clone.run(["sh", "-c", "cat /root/marker; hostname; dmesg"], check=True)
    marker, hostname, dmesg = result.stdout.decode().split("\n", 2)
    assert (marker, hostname) == ("before-snapshot", "clone-1")
    assert "crng reseeded due to virtual machine fork" in dmesg


def test_a_restored_guest_has_the_wall_clock_time_of_the_restore(saved):
    _, path = saved
    with hartvm.VM.restore(path, epoch_ns=EPOCH_NS, rng_seed=SEED) as clone:
        seconds = int(clone.run(["date", "+%s"], check=True).stdout)
    assert EPOCH_NS // 10**9 <= seconds <= EPOCH_NS // 10**9 + 5


def test_two_restores_given_the_same_inputs_run_identically(saved):
    _, path = saved
    command = ["sh", "-c", "head -c 16 /dev/urandom | od -An -tx1; cat /proc/sys/kernel/random/uuid; "
                           "date +%s.%N"]
    results = []
    for _ in range(2):
        with hartvm.VM.restore(path, epoch_ns=EPOCH_NS, rng_seed=SEED) as clone:
            results.append(clone.run(command, check=True))
    assert results[0].stdout == results[1].stdout
    assert results[0].instructions == results[1].instructions
    with hartvm.VM.restore(path, epoch_ns=EPOCH_NS, rng_seed=bytes(32)) as other:
        # Another seed: other random bytes, although the snapshot is the same.
        assert other.run(command).stdout.split(b"\n")[0] != results[0].stdout.split(b"\n")[0]


def test_restored_ram_is_copy_on_write(saved, tmp_path):
    _, path = saved
    before = (path / "memory").read_bytes()
    with hartvm.VM.restore(path) as clone:
        clone.run(["sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=8"], check=True)
    assert (path / "memory").read_bytes() == before


def test_ram_is_saved_sparse(saved):
    _, path = saved
    stat = (path / "memory").stat()
    assert stat.st_size == 256 << 20
    assert stat.st_blocks * 512 < stat.st_size // 2


def test_a_snapshot_is_never_written_over(saved):
    vm, path = saved
    with pytest.raises(hartvm.HartvmError, match="already exists"):
        vm.snapshot(path)


# --- bad snapshots -------------------------------------------------------------------

def _copy(path, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    return copy


def _rewrite(copy, change):
    """Change the state file's bytes and give it a valid CRC again (a well-formed
    snapshot that says something else)."""
    data = bytearray((copy / "state").read_bytes()[:-4])
    change(data)
    (copy / "state").write_bytes(bytes(data) + struct.pack("<I", zlib.crc32(data)))


def test_a_corrupt_snapshot_is_refused(saved, tmp_path):
    copy = _copy(saved[1], tmp_path)
    data = bytearray((copy / "state").read_bytes())
    data[len(data) // 2] ^= 0x40
    (copy / "state").write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="corrupt"):
        hartvm.VM.restore(copy)


def test_a_truncated_state_file_is_refused(saved, tmp_path):
    copy = _copy(saved[1], tmp_path)
    data = (copy / "state").read_bytes()
    (copy / "state").write_bytes(data[:len(data) // 3])
    with pytest.raises(SnapshotError, match="corrupt or truncated"):
        hartvm.VM.restore(copy)


def test_a_truncated_memory_file_is_refused(saved, tmp_path):
    copy = _copy(saved[1], tmp_path)
    with open(copy / "memory", "r+b") as file:
        file.truncate(128 << 20)
    with pytest.raises(SnapshotError, match="truncated or mismatched"):
        hartvm.VM.restore(copy)


def test_another_format_version_is_refused(saved, tmp_path):
    copy = _copy(saved[1], tmp_path)
    _rewrite(copy, lambda data: struct.pack_into("<I", data, 8, snapshot.FORMAT_VERSION + 1))
    with pytest.raises(SnapshotError, match=f"format version {snapshot.FORMAT_VERSION + 1}"):
        hartvm.VM.restore(copy)


def test_another_section_version_is_refused(saved, tmp_path):
    copy = _copy(saved[1], tmp_path)
    sections = snapshot.read_state(copy)
    version, value = sections["plic"]
    sections["plic"] = (version + 1, value)
    _write(copy, sections)
    with pytest.raises(SnapshotError, match=f"section 'plic' has version {version + 1}"):
        hartvm.VM.restore(copy)


def _write(copy, sections):
    (copy / "state").unlink()
    snapshot.write_state(copy / "state", [(name, version, value)
                                          for name, (version, value) in sections.items()])


@pytest.mark.parametrize("section, change, message", [
    ("hart0", lambda state: state.update(state=state["state"][:100]), "wrong shape"),
    ("console", lambda state: state.update(device_id=2), "device id 2"),
    ("console", lambda state: state["queues"][0].update(desc=2**40), "rings outside RAM"),
    ("uart0", lambda state: state.pop("ier"), "'uart0' is invalid"),
    ("machine", lambda state: state.update(virtio=["rng", "console"]), "virtio devices"),
    ("config", lambda state: state.update(harts=65), "bad machine configuration"),
    ("config", lambda state: state.update(harts=2), "'machine' is invalid"),
])
def test_mismatched_or_invalid_sections_are_refused(saved, tmp_path, section, change, message):
    copy = _copy(saved[1], tmp_path)
    sections = snapshot.read_state(copy)
    change(sections[section][1])
    _write(copy, sections)
    with pytest.raises(SnapshotError, match=message):
        hartvm.VM.restore(copy)


def test_a_missing_section_is_refused(saved, tmp_path):
    copy = _copy(saved[1], tmp_path)
    sections = snapshot.read_state(copy)
    del sections["vmgenid"]
    _write(copy, sections)
    with pytest.raises(SnapshotError, match="'vmgenid' is missing"):
        hartvm.VM.restore(copy)


def test_a_directory_that_is_no_snapshot_is_refused(tmp_path):
    with pytest.raises(SnapshotError, match="not a hartvm snapshot"):
        hartvm.VM.restore(tmp_path)


# --- drives ----------------------------------------------------------------------------

def test_a_snapshot_keeps_its_drives_and_restores_write_to_overlays(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"base" * 1024 + bytes(1 << 20))
    path = tmp_path / "with-disk"
    with hartvm.VM(memory="128M", drives=[str(disk)], progress=False) as vm:
        vm.run(["sh", "-c", "printf saved | dd of=/dev/vda bs=512 seek=8 conv=notrunc,fsync"],
               check=True)
        vm.snapshot(path)
    base = disk.read_bytes()
    assert base[4096:4101] == b"saved"
    for text in ("one", "two"):
        with hartvm.VM.restore(path) as clone:
            read = ["dd", "if=/dev/vda", "bs=512", "skip=8", "count=1", "iflag=direct"]
            assert clone.run(read, check=True).stdout[:5] == b"saved"
            clone.run(["sh", "-c", f"printf {text} | dd of=/dev/vda bs=512 seek=8 "
                                   f"conv=notrunc,fsync"], check=True)
            assert clone.run(read, check=True).stdout[:3] == text.encode()
            clone.snapshot(tmp_path / f"clone-{text}")
    assert disk.read_bytes() == base            # clones wrote to their overlays only
    with hartvm.VM.restore(tmp_path / "clone-two") as again:   # a clone's writes travel along
        assert again.run(read, check=True).stdout[:3] == b"two"
    with open(disk, "r+b") as file:               # the drive file may change: the
        file.seek(4096)                            # snapshot has a copy of its own
        file.write(b"changed")
    with hartvm.VM.restore(path) as clone:
        assert clone.run(read, check=True).stdout[:5] == b"saved"
    copy = (path / "disk0").stat()
    assert copy.st_size == len(base) and copy.st_blocks * 512 < 64 << 10    # sparse


def test_random_damage_with_a_valid_crc_is_refused_or_harmless(saved, tmp_path):
    """A hostile snapshot (bytes changed, CRC made valid again) may restore or be
    refused with SnapshotError, never fail in another way."""
    import random
    generator = random.Random(1234)
    copy = _copy(saved[1], tmp_path)
    original = (copy / "state").read_bytes()[:-4]
    refused = 0
    for _ in range(150):
        data = bytearray(original)
        for _ in range(generator.choice([1, 2, 8])):
            data[generator.randrange(16, len(data))] = generator.randrange(256)
        (copy / "state").write_bytes(bytes(data) + struct.pack("<I", zlib.crc32(data)))
        try:
            hartvm.VM.restore(copy).close()
        except SnapshotError:
            refused += 1
    assert refused > 0


def test_in_process_forks_share_a_frozen_drive(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    read = ["dd", "if=/dev/vda", "bs=512", "count=1", "iflag=direct"]
    with hartvm.VM(memory="128M", drives=[str(disk)], progress=False) as vm:
        vm.run(["sh", "-c", "printf one | dd of=/dev/vda conv=notrunc,fsync"], check=True)
        first, second = vm.fork(2)
        vm.run(["sh", "-c", "printf two | dd of=/dev/vda conv=notrunc,fsync"], check=True)
        first.run(["sh", "-c", "printf 1st | dd of=/dev/vda conv=notrunc,fsync"], check=True)
        assert first.run(read).stdout[:3] == b"1st"
        assert second.run(read).stdout[:3] == b"one"
        assert vm.run(read).stdout[:3] == b"two"
        assert (first.hostname, second.hostname) == ("hartvm-1", "hartvm-2")
        first.close()
        second.close()
    assert disk.read_bytes()[:3] == b"one"     # written before the fork, then frozen


def _mapping_flags(address: int) -> list[str]:
    """VmFlags of this process's mapping that holds ``address``."""
    (entry,) = smaps_overlapping(address)
    return entry["VmFlags"].split()


def test_restored_ram_is_private_and_offered_to_ksm(saved):
    """Guest RAM mappings are private (copy-on-write) and mergeable: the host's KSM
    may share identical pages between VMs (smaps flag "mg")."""
    vm, path = saved
    with hartvm.VM.restore(path) as clone:
        for ram in (vm.machine.ram, clone.machine.ram):      # anonymous, then file-backed
            flags = _mapping_flags(ram.m8.ctypes.data)
            assert "mg" in flags and "sh" not in flags, flags


@pytest.mark.parametrize("name, make", [
    ("state", lambda path: os.mkfifo(path)),
    ("state", lambda path: os.symlink("/dev/zero", path)),
    ("memory", lambda path: os.mkfifo(path)),
    ("memory", lambda path: os.symlink("/etc/hostname", path)),
])
def test_snapshot_files_must_be_regular_files(saved, tmp_path, name, make):
    """A FIFO would hang the restore, a link could hand the guest any host file."""
    copy = _copy(saved[1], tmp_path)
    (copy / name).unlink()
    make(copy / name)
    with pytest.raises(SnapshotError, match="not a regular file"):
        hartvm.VM.restore(copy)


def test_hart_counters_near_overflow_are_refused(saved, tmp_path):
    copy = _copy(saved[1], tmp_path)
    sections = snapshot.read_state(copy)
    sections["hart0"][1]["state"][L.CYCLE] = 2**63 - 1000
    _write(copy, sections)
    with pytest.raises(SnapshotError, match="counter out of range"):
        hartvm.VM.restore(copy)


def test_an_array_of_absurd_shape_is_refused():
    data = b"A\x01\x02" + struct.pack("<2Q", 0, 2**63)
    with pytest.raises(SnapshotError, match="too large"):
        snapshot.decode(data)


@pytest.mark.parametrize("garbage", ["random", "zeros"])
def test_a_snapshot_whose_ram_is_garbage_is_reported_dead_not_waited_for(saved, tmp_path,
                                                                         garbage):
    """The guest must answer its first request within a bound of instructions."""
    copy = _copy(saved[1], tmp_path)
    size = (copy / "memory").stat().st_size
    with open(copy / "memory", "r+b") as memory:
        if garbage == "random":
            memory.write(np.random.default_rng(5).bytes(size))
        else:
            memory.truncate(0)
            memory.truncate(size)
    with hartvm.VM.restore(copy) as vm:
        with pytest.raises(hartvm.GuestError, match="did not answer|panicked|powered off|"
                                                    "nothing left to wake"):
            vm.run("true")
        assert vm.closed
