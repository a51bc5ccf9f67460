"""The ``virt`` board: QEMU's RISC-V virt memory map, its devices and their device tree.

One table, ``BOARD``, declares the board as QEMU's ``hw/riscv/virt.c``
does with its ``virt_memmap``: each row names a device (its stable identity:
the snapshot section and the bus name), its region and PLIC source, and
the factory that builds it. Attaching, snapshot sections and the device
tree all read the table; each device writes its own device-tree node
(``fdt_node``, as RVVM's devices do), so that software built for QEMU's
``-M virt`` runs unmodified. Adding a device is one file and one row.

Virtio devices go into the eight virtio-mmio slots in the order they are
attached, each under a name of its own (``console``, ``rng``, ``disk0``, ...)
that its snapshot section carries. A free slot answers with DeviceID 0, as
QEMU's do, so that a driver may scan them all.

Beyond QEMU's map, the board has a VM Generation ID (``microsoft,vmgenid``)
in the free page after the RTC, on the free PLIC source 12: the host changes
the ID when it restores or forks a guest, and Linux reseeds its random
generator at once.
"""

from dataclasses import dataclass
from typing import Callable

from ..bus import Bus
from ..cpu.layout import EXTENSIONS, TIMEBASE_HZ, isa_string
from ..devices.aclint import ACLINT
from ..devices.goldfish_rtc import GoldfishRTC
from ..devices.plic import PLIC
from ..devices.rom import ROM
from ..devices.syscon import Syscon
from ..devices.uart16550 import UART16550
from ..devices.virtio.mmio import EmptySlot, VirtioMMIO
from ..devices.vmgenid import VMGenID
from ..errors import HartvmError
from ..loader.elf import clip
from ..memory import RAM
from . import boot, fdt


@dataclass(frozen=True)
class Region:
    base: int
    size: int
    irq: int | None = None     # PLIC source


@dataclass(frozen=True)
class Row:
    """One device of the board: its name, where it is, and how to build it
    (``make(board, region) -> device``). The device writes its own node."""
    name: str
    region: Region
    make: Callable


BOARD = (
    Row("rom", Region(0x0000_1000, 0xF000), lambda board, r: ROM(r.size)),
    Row("syscon", Region(0x0010_0000, 0x1000),
        lambda board, r: Syscon(board.on_exit, board.on_reset)),
    Row("rtc", Region(0x0010_1000, 0x1000, irq=11),
        lambda board, r: GoldfishRTC(board.rtc_epoch_ns, board.elapsed_ns,
                                     board.irq_line(r.irq))),
    # Not in QEMU's map: a free page and a free source.
    Row("vmgenid", Region(0x0010_2000, 0x1000, irq=12),
        lambda board, r: VMGenID(lambda: board.devices["plic"].pulse(r.irq))),
    Row("clint", Region(0x0200_0000, 0x10000), lambda board, r: ACLINT(board.hart_states)),
    Row("plic", Region(0x0C00_0000, 0x600000), lambda board, r: PLIC(board.hart_states)),
    Row("uart0", Region(0x1000_0000, 0x100, irq=10),
        lambda board, r: UART16550(board.io.console_write, board.irq_line(r.irq))),
)
MEMORY_MAP: dict[str, Region] = {row.name: row.region for row in BOARD}
VIRTIO_SLOTS = tuple(Region(0x1000_1000 + i * 0x1000, 0x1000, irq=1 + i) for i in range(8))
DRAM_BASE = 0x8000_0000
# The MMU implements Sv39, Sv48 and Sv57; the device tree says Sv48 as QEMU
# 7.2's virt board does for every RV64 hart (hw/riscv/virt.c,
# create_fdt_socket_cpus). Linux 6.12 does not read it: it takes the widest
# mode satp accepts, Sv57, on QEMU 7.2 and on hartvm alike.
MMU_TYPE = "riscv,sv48"


class DeviceTree:
    """The tree being built, with what the devices' nodes refer to: the SoC
    node, ``chosen``, the PLIC's phandle and the harts' interrupt controllers."""

    def __init__(self, memory_size: int):
        self.root = fdt.Node()
        self.chosen = self.root.child("chosen")
        memory = self.root.child(f"memory@{DRAM_BASE:x}")
        memory.set("device_type", "memory").set("reg", fdt.addr_size(DRAM_BASE, memory_size))
        self._next_phandle = 1
        self.cpus = self.root.child("cpus")
        self.intc_phandles = []
        self.soc = self.root.child("soc")
        self.plic_phandle = self.new_phandle()

    def new_phandle(self) -> int:
        self._next_phandle += 1
        return self._next_phandle - 1

    def device(self, name: str, region: Region, compatible) -> fdt.Node:
        """A node ``/soc/name@base`` with its reg, compatible and, for a region
        with a PLIC source, its interrupt."""
        node = self.soc.child(f"{name}@{region.base:x}")
        if region.irq is not None:
            node.set("interrupts", region.irq).set("interrupt-parent", self.plic_phandle)
        node.set("reg", fdt.addr_size(region.base, region.size))
        node.set("compatible", compatible)
        return node

    def per_hart(self, *irqs: int) -> tuple:
        """``interrupts-extended`` cells: each hart's controller with each of ``irqs``."""
        return tuple(cell for phandle in self.intc_phandles for irq in irqs
                     for cell in (phandle, irq))


class VirtBoard:
    """RAM, the bus and the devices of the board, wired from ``BOARD``.

    ``hart_states`` is the list of the harts' state arrays; the machine fills
    it, and the CLINT and PLIC drive the harts' interrupt bits through it.
    ``io`` is the machine's HostIO (devices that talk to the host use it);
    ``on_exit(status)``, ``on_reset()`` and ``elapsed_ns()`` are the machine's.
    """

    def __init__(self, memory_size: int, hart_states, io, on_exit, on_reset, elapsed_ns,
                 rtc_epoch_ns: int, memory_fd: int | None = None):
        self.ram = RAM(DRAM_BASE, memory_size, memory_fd)
        self.hart_states = hart_states
        self.io = io
        self.on_exit, self.on_reset, self.elapsed_ns = on_exit, on_reset, elapsed_ns
        self.rtc_epoch_ns = rtc_epoch_ns
        self.bus = Bus()
        self.devices = {}                       # name -> device, in table order
        for row in BOARD:
            device = row.make(self, row.region)
            self.bus.attach(row.region.base, row.region.size, device)
            self.devices[row.name] = device
        self.regions = {row.name: row.region for row in BOARD}
        self._reset_vector_end = MEMORY_MAP["rom"].base    # set_boot sets it
        self.virtio: dict[str, VirtioMMIO] = {}     # name -> transport, in slot order
        # Every slot answers, as on QEMU's board: DeviceID 0 until a device comes.
        for region in VIRTIO_SLOTS:
            self.bus.attach(region.base, region.size, EmptySlot())

    def irq_line(self, source: int):
        """``set_irq(level)`` of a PLIC source."""
        return lambda level: self.devices["plic"].set_irq(source, level)

    def attach_virtio(self, name: str, backend) -> VirtioMMIO:
        """Put a virtio device in the next free MMIO slot, wired to its PLIC source."""
        if name in self.devices or name in self.virtio:
            raise HartvmError(f"the board has a device named {name!r} already")
        slot = len(self.virtio)
        if slot >= len(VIRTIO_SLOTS):
            raise HartvmError(f"at most {len(VIRTIO_SLOTS)} virtio devices")
        region = VIRTIO_SLOTS[slot]
        device = VirtioMMIO(self.ram, backend, self.irq_line(region.irq))
        self.bus.detach(region.base)                # the slot's EmptySlot
        self.bus.attach(region.base, region.size, device)
        self.virtio[name] = device
        self.regions[name] = region
        return device

    def components(self) -> list[tuple[str, object]]:
        """Every device by its name: board devices in table order, then virtio."""
        return list(self.devices.items()) + list(self.virtio.items())

    def next_event_ns(self) -> int | None:
        """When (guest nanoseconds since reset) a device's timer is next due:
        the RTC's alarm (the CLINT's timers live in the harts' state)."""
        return self.devices["rtc"].next_event_ns()

    def expire(self) -> None:
        """Let the devices whose timers are due act (the RTC raises its alarm)."""
        self.devices["rtc"].expire()

    def reset(self) -> None:
        """A machine reset: devices return to their power-on state (the wall clock runs on)."""
        rtc = self.devices["rtc"]
        rtc.epoch_ns = rtc.now()
        for _, device in self.components():
            device.reset()

    def set_boot(self, start: int, fdt_addr: int = 0, next_addr: int | None = None) -> None:
        """Point the reset vector at ``start`` (firmware or bare-metal entry)."""
        content = boot.reset_vector(start, fdt_addr, start if next_addr is None else next_addr)
        rom = self.devices["rom"]
        rom.data[:] = 0
        rom.data[:len(content)] = list(content)
        self._reset_vector_end = MEMORY_MAP["rom"].base + len(content)

    def load_rom(self, segments, path: str) -> None:
        """Put the parts of ELF ``segments`` that lie in the boot ROM there
        (after ``set_boot``), as QEMU does: its loader writes them with
        ``address_space_write_rom``, which stores into ROM as into RAM. A
        segment over the reset vector or fw_dynamic_info is refused, as QEMU
        refuses it ("Some ROM regions are overlapping":
        ``rom_check_and_register_reset`` in hw/core/loader.c)."""
        region = MEMORY_MAP["rom"]
        rom = self.devices["rom"]
        for segment in segments:
            piece = clip(segment, region.base, region.size)
            if piece is None:
                continue
            paddr, data = piece
            if paddr < self._reset_vector_end:
                raise HartvmError(f"{path}: segment at {segment.paddr:#x}-"
                                  f"{segment.paddr + segment.memsize:#x} overlaps the reset "
                                  f"vector in the boot ROM ({region.base:#x}-"
                                  f"{self._reset_vector_end:#x})")
            offset = paddr - region.base
            rom.data[offset:offset + len(data)] = list(data)

    def device_tree(self, harts: int, bootargs: str = "",
                    initrd: tuple[int, int] | None = None, rng_seed: bytes = b"") -> bytes:
        """The DTB describing this board, as QEMU's virt machine describes itself
        (``create_fdt`` in hw/riscv/virt.c): every device writes its own node."""
        tree = DeviceTree(self.ram.size)
        root, chosen = tree.root, tree.chosen
        root.set("#address-cells", 2).set("#size-cells", 2)
        root.set("compatible", "riscv-virtio").set("model", "riscv-virtio,qemu")
        if bootargs:
            chosen.set("bootargs", bootargs)
        if rng_seed:
            # Entropy for the kernel's random pool, as QEMU gives it: without it
            # Linux spends ~150 million instructions gathering timer jitter.
            chosen.set("rng-seed", rng_seed)
        if initrd is not None:
            chosen.set("linux,initrd-start", (initrd[0] >> 32, initrd[0]))
            chosen.set("linux,initrd-end", (initrd[1] >> 32, initrd[1]))
        self._cpus(tree, harts)
        tree.soc.set("#address-cells", 2).set("#size-cells", 2)
        tree.soc.set("compatible", "simple-bus").set("ranges")
        for name, device in self.components():
            fdt_node = getattr(device, "fdt_node", None)
            if fdt_node is not None:
                fdt_node(tree, self.regions[name])
        return fdt.to_dtb(root)

    @staticmethod
    def _cpus(tree: DeviceTree, harts: int) -> None:
        """``/cpus`` with one node per hart and its interrupt controller
        (``create_fdt_socket_cpus`` in QEMU's virt.c)."""
        cpus = tree.cpus
        cpus.set("#address-cells", 1).set("#size-cells", 0)
        cpus.set("timebase-frequency", TIMEBASE_HZ)
        cluster = fdt.Node("cluster0")
        for hartid in range(harts):
            cpu = cpus.child(f"cpu@{hartid}")
            cpu_phandle = tree.new_phandle()
            cpu.set("phandle", cpu_phandle).set("device_type", "cpu").set("reg", hartid)
            cpu.set("status", "okay").set("compatible", "riscv")
            cpu.set("riscv,isa", isa_string()).set("riscv,isa-base", "rv64i")
            cpu.set("riscv,isa-extensions", EXTENSIONS)
            cpu.set("mmu-type", MMU_TYPE)
            intc = cpu.child("interrupt-controller")
            intc_phandle = tree.new_phandle()
            tree.intc_phandles.append(intc_phandle)
            intc.set("#interrupt-cells", 1).set("interrupt-controller")
            intc.set("compatible", "riscv,cpu-intc").set("phandle", intc_phandle)
            cluster.child(f"core{hartid}").set("cpu", cpu_phandle)
        cpus.child("cpu-map").children.append(cluster)
