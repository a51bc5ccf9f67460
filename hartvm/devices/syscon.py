"""The SiFive test finisher ("syscon") of the virt board: power-off, reboot, exit code.

A 32-bit write at offset 0 ends the machine (QEMU hw/misc/sifive_test
semantics): 0x5555 is a pass (exit status 0), ``(code << 16) | 0x3333`` a
failure with that code, and 0x7777 a reset. Other values are ignored.
"""

from .base import Device

FINISHER_FAIL = 0x3333
FINISHER_PASS = 0x5555
FINISHER_RESET = 0x7777


class Syscon(Device):
    access_sizes = frozenset({4})

    def __init__(self, on_exit, on_reset):
        super().__init__()
        self._on_exit = on_exit
        self._on_reset = on_reset

    def read(self, offset, size):
        return 0

    def fdt_node(self, tree, region) -> None:
        """The test device and the syscon-poweroff and syscon-reboot nodes that
        drive it (create_fdt_reset in QEMU's hw/riscv/virt.c)."""
        node = tree.device("test", region, ("sifive,test1", "sifive,test0", "syscon"))
        phandle = tree.new_phandle()
        node.set("phandle", phandle)
        for name, value in (("poweroff", FINISHER_PASS), ("reboot", FINISHER_RESET)):
            action = tree.root.child(name)
            action.set("value", value).set("offset", 0).set("regmap", phandle)
            action.set("compatible", f"syscon-{name}")

    def write(self, offset, size, value):
        if offset != 0:
            self.unknown("write", offset)
            return
        status = value & 0xFFFF
        if status == FINISHER_PASS:
            self._on_exit(0)
        elif status == FINISHER_FAIL:
            self._on_exit((value >> 16) & 0xFFFF)
        elif status == FINISHER_RESET:
            self._on_reset()
