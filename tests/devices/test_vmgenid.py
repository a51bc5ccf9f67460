"""The VM Generation ID: the ID through MMIO, the edge on the PLIC, snapshots, a Linux guest."""

import hashlib
import os

import numpy as np
import pytest

import hartvm
from hartvm.cpu import layout as L
from hartvm.devices.plic import PLIC
from hartvm.devices.vmgenid import VMGenID

ID = bytes(range(0xA0, 0xB0))
S0 = 1                                    # hart 0's S-mode context
IRQ = 12


def test_reads_of_every_size_return_the_id_bytes():
    device = VMGenID(generation_id=ID)
    for size in (1, 2, 4, 8):
        for offset in range(0, 16, size):
            assert device.read(offset, size) == int.from_bytes(ID[offset:offset + size], "little")
    assert device.read(12, 8) == int.from_bytes(ID[12:], "little")   # past the end: zeros
    assert device.read(16, 4) == 0 and device.read(0xFF8, 8) == 0


def test_writes_are_ignored():
    device = VMGenID(generation_id=ID)
    for offset in (0, 8, 15, 16, 0xFF8):
        device.write(offset, 8 if offset % 8 == 0 else 1, 0xFFFF_FFFF_FFFF_FFFF)
    assert device.generation_id == ID


def test_new_generation_pends_the_plic_source_as_an_edge():
    state = np.zeros(L.STATE_SIZE, np.int64)
    plic = PLIC([state])
    plic.write(4 * IRQ, 4, 1)
    plic.write(0x2000 + 0x80 * S0, 4, 1 << IRQ)
    device = VMGenID(lambda: plic.pulse(IRQ))
    new = os.urandom(16)
    device.new_generation(new)
    assert device.generation_id == new and device.read(0, 8) == int.from_bytes(new[:8], "little")
    assert state[L.SEIP_LINE] == 1
    assert plic.read(0x200004 + 0x1000 * S0, 4) == IRQ        # claim
    plic.write(0x200004 + 0x1000 * S0, 4, IRQ)                 # complete
    assert state[L.SEIP_LINE] == 0                             # no level: stays quiet
    with pytest.raises(ValueError):
        device.new_generation(b"short")
    assert device.generation_id == new


def test_save_and_restore_round_trip_without_an_interrupt():
    pulses = []
    device = VMGenID(lambda: pulses.append(1), generation_id=ID)
    snapshot = device.save()
    assert snapshot == {"generation_id": ID}
    other = VMGenID(lambda: pulses.append(1))
    other.restore(snapshot)
    assert other.generation_id == ID and other.save() == snapshot and pulses == []


@pytest.mark.parametrize("state", [{}, {"generation_id": None}, {"generation_id": b"x" * 15},
                                   {"generation_id": b"x" * 17}, {"generation_id": "x" * 16},
                                   {"generation_id": list(range(16))}])
def test_restore_refuses_bad_input(state):
    device = VMGenID(generation_id=ID)
    with pytest.raises(ValueError, match="16 bytes"):
        device.restore(state)
    assert device.generation_id == ID


def test_the_machine_derives_the_first_id_from_its_seed():
    machine = hartvm.Machine(memory_size=16 << 20, io=hartvm.HostIO(output=lambda d: None), rng_seed=b"seed")
    assert machine.board.devices["vmgenid"].generation_id == hashlib.sha256(b"vmgenidseed").digest()[:16]


def test_linux_reseeds_its_random_generator_on_a_new_generation():
    # Booted, not restored: a restore itself gives a new generation.
    with hartvm.VM(memory="256M", progress=False, epoch_ns=1_700_000_000 * 10**9,
                   rng_seed=bytes(32), boot=True) as vm:
        bound = vm.run(["ls", "/sys/bus/platform/drivers/vmgenid/"])
        assert b"102000.vmgenid" in bound.stdout, vm.run(["dmesg"]).stdout.decode()
        assert b"virtual machine fork" not in vm.run(["dmesg"]).stdout
        vm.machine.board.devices["vmgenid"].new_generation(os.urandom(16))
        vm.run(["true"])
        assert b"crng reseeded due to virtual machine fork" in vm.run(["dmesg"]).stdout
