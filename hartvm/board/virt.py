"""The ``virt`` board: QEMU's RISC-V virt memory map, its devices and the boot ROM.

One table, ``MEMORY_MAP``, says where everything is; devices are attached
from it, and later the device tree is generated from it, so that software
built for QEMU's ``-M virt`` runs unmodified.

Boot follows QEMU: every hart starts at the reset vector in the boot ROM,
which loads a0 = mhartid, a1 = device-tree address, a2 = address of the
``fw_dynamic_info`` block (OpenSBI's fw_dynamic handoff, which follows the
code in the ROM) and jumps to the start address (the firmware, or with
``--bios none`` the kernel's entry point).

Beyond QEMU's map, the board has a VM Generation ID (``microsoft,vmgenid``)
in the free page after the RTC, on the free PLIC source 12: the host changes
the ID when it restores or forks a guest, and Linux reseeds its random
generator at once.
"""

import struct
from dataclasses import dataclass

from ..bus import Bus
from ..cpu.layout import IRQ_MEI, IRQ_MSI, IRQ_MTI, IRQ_SEI, TIMEBASE_HZ
from ..devices.aclint import ACLINT
from ..devices.goldfish_rtc import GoldfishRTC
from ..devices.plic import SOURCES as PLIC_SOURCES, PLIC
from ..devices.rom import ROM
from ..devices.syscon import FINISHER_PASS, FINISHER_RESET, Syscon
from ..devices.uart16550 import UART16550
from ..devices.virtio.mmio import VirtioMMIO
from ..devices.vmgenid import VMGenID
from ..errors import HartvmError
from ..memory import RAM
from . import fdt


@dataclass(frozen=True)
class Region:
    base: int
    size: int
    irq: int | None = None


VIRTIO_SLOTS = 8
MEMORY_MAP: dict[str, Region] = {
    "rom": Region(0x0000_1000, 0xF000),
    "syscon": Region(0x0010_0000, 0x1000),
    "rtc": Region(0x0010_1000, 0x1000, irq=11),
    "vmgenid": Region(0x0010_2000, 0x1000, irq=12),   # not in QEMU's map: a free page and source
    "clint": Region(0x0200_0000, 0x10000),
    "plic": Region(0x0C00_0000, 0x600000),
    "uart0": Region(0x1000_0000, 0x100, irq=10),
    **{f"virtio{i}": Region(0x1000_1000 + i * 0x1000, 0x1000, irq=1 + i)
       for i in range(VIRTIO_SLOTS)},
    "dram": Region(0x8000_0000, 0),  # size: the machine's memory size
}

# What the hart implements, as the device tree's riscv,isa-extensions lists it.
ISA_EXTENSIONS = ("i", "m", "a", "f", "d", "c", "zicsr", "zifencei", "zicntr")
UART_CLOCK_HZ = 3686400
FW_DYNAMIC_MAGIC = 0x4942534F  # "OSBI"
FW_DYNAMIC_VERSION = 2
NEXT_MODE_S = 1


def reset_vector(start: int, fdt: int, next_addr: int, next_mode: int = NEXT_MODE_S) -> bytes:
    """The boot ROM contents: code, then start/fdt addresses, then fw_dynamic_info."""
    code = [
        0x00000297,  # auipc t0, 0          t0 = address of this code
        0x02828613,  # addi  a2, t0, 40     a2 = &fw_dynamic_info
        0xF1402573,  # csrr  a0, mhartid
        0x0202B583,  # ld    a1, 32(t0)     a1 = device tree
        0x0182B283,  # ld    t0, 24(t0)     t0 = start address
        0x00028067,  # jr    t0
    ]
    fw_dynamic_info = struct.pack("<6Q", FW_DYNAMIC_MAGIC, FW_DYNAMIC_VERSION, next_addr,
                                  next_mode, 0, 0)
    return struct.pack("<6I", *code) + struct.pack("<2Q", start, fdt) + fw_dynamic_info


class VirtBoard:
    """RAM, the bus and the devices of the board, wired from ``MEMORY_MAP``.

    ``hart_states`` is the list of the harts' state arrays; the machine fills
    it, and the CLINT and PLIC drive the harts' interrupt bits through it.
    """

    def __init__(self, memory_size: int, hart_states, output, on_exit, on_reset, elapsed_ns,
                 rtc_epoch_ns: int, memory_fd: int | None = None):
        dram = MEMORY_MAP["dram"]
        self.ram = RAM(dram.base, memory_size, memory_fd)
        self.hart_states = hart_states
        self.rom = ROM(MEMORY_MAP["rom"].size)
        self.plic = PLIC(hart_states)
        uart_irq = MEMORY_MAP["uart0"].irq
        self.uart = UART16550(output, lambda level: self.plic.set_irq(uart_irq, level))
        self.clint = ACLINT(hart_states)
        self.rtc = GoldfishRTC(rtc_epoch_ns, elapsed_ns)
        self.syscon = Syscon(on_exit, on_reset)
        vmgenid_irq = MEMORY_MAP["vmgenid"].irq
        self.vmgenid = VMGenID(lambda: self.plic.pulse(vmgenid_irq))
        self.bus = Bus()
        for name, device in (("rom", self.rom), ("syscon", self.syscon), ("rtc", self.rtc),
                             ("vmgenid", self.vmgenid),
                             ("clint", self.clint), ("plic", self.plic), ("uart0", self.uart)):
            region = MEMORY_MAP[name]
            self.bus.attach(region.base, region.size, device)
        self.virtio: list[VirtioMMIO] = []

    def attach_virtio(self, backend) -> VirtioMMIO:
        """Put a virtio device in the next free MMIO slot, wired to its PLIC source."""
        slot = len(self.virtio)
        if slot >= VIRTIO_SLOTS:
            raise HartvmError(f"at most {VIRTIO_SLOTS} virtio devices")
        region = MEMORY_MAP[f"virtio{slot}"]
        device = VirtioMMIO(self.ram, backend,
                            lambda level, irq=region.irq: self.plic.set_irq(irq, level))
        self.bus.attach(region.base, region.size, device)
        self.virtio.append(device)
        return device

    def reset(self) -> None:
        """A machine reset: devices return to their power-on state (the wall clock runs on)."""
        self.rtc.epoch_ns = self.rtc.now()
        for device in (self.plic, self.uart, *self.virtio):
            device.reset()

    def set_boot(self, start: int, fdt: int = 0, next_addr: int | None = None) -> None:
        """Point the reset vector at ``start`` (firmware or bare-metal entry)."""
        content = reset_vector(start, fdt, start if next_addr is None else next_addr)
        self.rom.data[:] = 0
        self.rom.data[:len(content)] = list(content)

    def device_tree(self, harts: int, bootargs: str = "", initrd: tuple[int, int] | None = None,
                    isa_extensions=ISA_EXTENSIONS, rng_seed: bytes = b"") -> bytes:
        """The DTB describing this board, as QEMU's virt machine describes itself."""
        root = fdt.Node()
        root.set("#address-cells", 2).set("#size-cells", 2)
        root.set("compatible", "riscv-virtio").set("model", "riscv-virtio,qemu")
        chosen = root.child("chosen")
        uart = MEMORY_MAP["uart0"]
        chosen.set("stdout-path", f"/soc/serial@{uart.base:x}")
        if bootargs:
            chosen.set("bootargs", bootargs)
        if rng_seed:
            # Entropy for the kernel's random pool, as QEMU gives it: without it
            # Linux spends ~150 million instructions gathering timer jitter.
            chosen.set("rng-seed", rng_seed)
        if initrd is not None:
            chosen.set("linux,initrd-start", fdt.cells(initrd[0] >> 32, initrd[0]))
            chosen.set("linux,initrd-end", fdt.cells(initrd[1] >> 32, initrd[1]))
        dram = MEMORY_MAP["dram"]
        memory = root.child(f"memory@{dram.base:x}")
        memory.set("device_type", "memory").set("reg", fdt.addr_size(dram.base, self.ram.size))

        phandles = iter(range(1, 1 << 16))
        cpus = root.child("cpus")
        cpus.set("#address-cells", 1).set("#size-cells", 0)
        cpus.set("timebase-frequency", TIMEBASE_HZ)
        intc_phandles = []
        cpu_map = fdt.Node("cpu-map")
        cluster = cpu_map.child("cluster0")
        isa = "rv64" + "".join(e for e in isa_extensions if len(e) == 1) + \
            "".join("_" + e for e in isa_extensions if len(e) > 1)
        for hartid in range(harts):
            cpu = cpus.child(f"cpu@{hartid}")
            cpu_phandle = next(phandles)
            cpu.set("phandle", cpu_phandle).set("device_type", "cpu").set("reg", hartid)
            cpu.set("status", "okay").set("compatible", "riscv")
            cpu.set("riscv,isa", isa).set("riscv,isa-base", "rv64i")
            cpu.set("riscv,isa-extensions", fdt.strings(*isa_extensions))
            cpu.set("mmu-type", "riscv,sv48")
            intc = cpu.child("interrupt-controller")
            intc_phandle = next(phandles)
            intc_phandles.append(intc_phandle)
            intc.set("#interrupt-cells", 1).set("interrupt-controller")
            intc.set("compatible", "riscv,cpu-intc").set("phandle", intc_phandle)
            cluster.child(f"core{hartid}").set("cpu", cpu_phandle)
        cpus.children.append(cpu_map)

        soc = root.child("soc")
        soc.set("#address-cells", 2).set("#size-cells", 2)
        soc.set("compatible", "simple-bus").set("ranges")
        syscon_region = MEMORY_MAP["syscon"]
        syscon_phandle = next(phandles)
        test = soc.child(f"test@{syscon_region.base:x}")
        test.set("phandle", syscon_phandle)
        test.set("reg", fdt.addr_size(syscon_region.base, syscon_region.size))
        test.set("compatible", fdt.strings("sifive,test1", "sifive,test0", "syscon"))
        for name, value in (("poweroff", FINISHER_PASS), ("reboot", FINISHER_RESET)):
            node = root.child(name)
            node.set("value", value).set("offset", 0).set("regmap", syscon_phandle)
            node.set("compatible", f"syscon-{name}")

        clint_region = MEMORY_MAP["clint"]
        clint = soc.child(f"clint@{clint_region.base:x}")
        clint.set("interrupts-extended", fdt.cells(*[c for p in intc_phandles
                                                      for c in (p, IRQ_MSI, p, IRQ_MTI)]))
        clint.set("reg", fdt.addr_size(clint_region.base, clint_region.size))
        clint.set("compatible", fdt.strings("sifive,clint0", "riscv,clint0"))

        plic_region = MEMORY_MAP["plic"]
        plic_phandle = next(phandles)
        plic = soc.child(f"plic@{plic_region.base:x}")
        plic.set("phandle", plic_phandle).set("riscv,ndev", PLIC_SOURCES - 1)
        plic.set("reg", fdt.addr_size(plic_region.base, plic_region.size))
        plic.set("interrupts-extended", fdt.cells(*[c for p in intc_phandles
                                                     for c in (p, IRQ_MEI, p, IRQ_SEI)]))
        plic.set("interrupt-controller").set("compatible", fdt.strings("sifive,plic-1.0.0",
                                                                      "riscv,plic0"))
        plic.set("#address-cells", 0).set("#interrupt-cells", 1)

        rtc_region = MEMORY_MAP["rtc"]
        rtc = soc.child(f"rtc@{rtc_region.base:x}")
        rtc.set("interrupts", rtc_region.irq).set("interrupt-parent", plic_phandle)
        rtc.set("reg", fdt.addr_size(rtc_region.base, rtc_region.size))
        rtc.set("compatible", "google,goldfish-rtc")

        vmgenid_region = MEMORY_MAP["vmgenid"]
        vmgenid = soc.child(f"vmgenid@{vmgenid_region.base:x}")
        vmgenid.set("interrupts", vmgenid_region.irq).set("interrupt-parent", plic_phandle)
        vmgenid.set("reg", fdt.addr_size(vmgenid_region.base, vmgenid_region.size))
        vmgenid.set("compatible", "microsoft,vmgenid")

        for slot in range(len(self.virtio)):
            region = MEMORY_MAP[f"virtio{slot}"]
            node = soc.child(f"virtio_mmio@{region.base:x}")
            node.set("interrupts", region.irq).set("interrupt-parent", plic_phandle)
            node.set("reg", fdt.addr_size(region.base, region.size))
            node.set("compatible", "virtio,mmio")

        serial = soc.child(f"serial@{uart.base:x}")
        serial.set("interrupts", uart.irq).set("interrupt-parent", plic_phandle)
        serial.set("clock-frequency", UART_CLOCK_HZ)
        serial.set("reg", fdt.addr_size(uart.base, uart.size)).set("compatible", "ns16550a")
        return fdt.to_dtb(root)
