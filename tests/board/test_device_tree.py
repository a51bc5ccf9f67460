"""The generated device tree: valid for dtc, and describing the board as QEMU's virt does."""

import subprocess

import pytest

from hartvm import HostIO, Machine
from hartvm.board.virt import MEMORY_MAP


@pytest.fixture(scope="module")
def dts():
    machine = Machine(memory_size=256 << 20, harts=2, io=HostIO(output=lambda d: None))
    dtb = machine.board.device_tree(2, "console=ttyS0 quiet", (0x88000000, 0x88100000))
    result = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", "-o", "-", "-"], input=dtb,
                            capture_output=True, check=True)
    return result.stdout.decode()


def test_dtc_reads_it_back(dts):
    assert dts.startswith("/dts-v1/;")


def test_memory_and_chosen(dts):
    assert "memory@80000000" in dts
    assert "reg = <0x00 0x80000000 0x00 0x10000000>;" in dts
    assert 'bootargs = "console=ttyS0 quiet";' in dts
    assert "linux,initrd-start = <0x00 0x88000000>;" in dts
    assert 'stdout-path = "/soc/serial@10000000";' in dts


def test_one_cpu_node_per_hart_with_the_isa(dts):
    assert "cpu@0 {" in dts and "cpu@1 {" in dts and "cpu@2 {" not in dts
    # Sstc advertised as QEMU 7.2 does (an _sstc after the Z extensions), so that
    # Linux programs stimecmp itself instead of asking SBI for every timer event
    assert 'riscv,isa = "rv64imafdc_zicsr_zifencei_zicntr_sstc";' in dts
    assert 'riscv,isa-extensions = "i\\0m\\0a\\0f\\0d\\0c\\0zicsr\\0zifencei\\0zicntr\\0sstc";' in dts
    assert 'mmu-type = "riscv,sv48";' in dts
    assert "timebase-frequency = <0x989680>;" in dts   # 10 MHz


def test_devices_from_the_memory_map(dts):
    for name in ("uart0", "plic", "clint", "rtc"):
        assert f"@{MEMORY_MAP[name].base:x} {{" in dts
    assert 'compatible = "ns16550a";' in dts
    assert "interrupts = <0x0a>;" in dts          # the UART's PLIC source
    assert "riscv,ndev = <0x5f>;" in dts
    assert 'compatible = "syscon-poweroff";' in dts and "value = <0x5555>;" in dts


def test_rng_seed_reaches_chosen():
    machine = Machine(memory_size=64 << 20, io=HostIO(output=lambda d: None), rng_seed=bytes(range(32)))
    dtb = machine.board.device_tree(1, rng_seed=machine.rng_seed)
    dts = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", "-o", "-", "-"], input=dtb,
                         capture_output=True, check=True).stdout.decode()
    assert "rng-seed = <0x10203 0x4050607 0x8090a0b" in dts


def test_vmgenid_node(dts):
    region = MEMORY_MAP["vmgenid"]
    node = dts[dts.index(f"vmgenid@{region.base:x} {{"):]
    node = node[:node.index("};")]
    assert 'compatible = "microsoft,vmgenid";' in node
    assert f"reg = <0x00 {region.base:#x} 0x00 {region.size:#x}>;" in node
    assert f"interrupts = <{region.irq:#04x}>;" in node
    assert "interrupt-parent = <" in node
