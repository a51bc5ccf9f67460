"""Random MMIO traffic to every device of the board never raises in the host.

50,000 reads and writes of random sizes and values at random offsets in
each device's range, the virtio slots' too (and at the edges between them), go through the bus,
as the run loop sends a guest's accesses. Each must either be served or be
refused as an access fault; nothing may raise.
"""

import random

from hartvm import HostIO, Machine
from hartvm.devices.virtio.blk import Block
from hartvm.devices.virtio.console import VirtioConsole
from hartvm.devices.virtio.net import VirtioNet
from hartvm.devices.virtio.rng import Rng


def test_random_device_accesses(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 16))
    machine = Machine(memory_size=4 << 20, harts=2, io=HostIO(output=lambda data: None))
    console = VirtioConsole()
    console.add_port(lambda data: None, console=True)
    console.add_port(lambda data: None, name="org.example.port")
    for name, backend in (("disk0", Block(str(disk))), ("rng", Rng()), ("console", console),
                          ("net", VirtioNet(bytes.fromhex("525400000001")))):
        machine.board.attach_virtio(name, backend)
    bus = machine.board.bus
    rng = random.Random(7)
    regions = list(machine.board.regions.values())      # the table's and the virtio slots
    served = refused = 0
    for _ in range(50_000):
        region = rng.choice(regions)
        offset = rng.choice([rng.randrange(region.size), rng.randrange(0x200),
                             region.size - rng.randrange(1, 9), rng.randrange(-8, 0)])
        size = rng.choice([1, 2, 4, 8])
        paddr = region.base + offset
        if rng.random() < 0.5:
            value = rng.choice([0, 1, 0xFFFFFFFF, rng.getrandbits(64), 0x5555 + 1])
            ok = bus.write(paddr, size, value)
        else:
            ok = bus.read(paddr, size) is not None
        served += bool(ok)
        refused += not ok
    assert served > 10_000 and refused > 1_000
