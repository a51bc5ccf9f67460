"""`make bench`: bare-metal workloads on hartvm and on QEMU in the same run.

For each workload in benchmarks/workloads it prints hartvm's wall time,
QEMU's wall time (``qemu-system-riscv64 -M virt -bios none``, the CPU
flags of ARCHITECTURE.md), their ratio, and hartvm's MIPS (instructions
counted by hartvm over the time spent in its run loop). Then the cold
start (empty numba cache) and the warm start of hartvm, the hypervisor
figures of hypervisor.py (snapshot restores, the run pool, forks), and the
MB/s of stdin and stdout through ``hartvm run`` against QEMU's on the same
guest (throughput.py), and the network against QEMU's ``-netdev user``
(network.py), and what the debugging facilities cost while idle
(debugging.py). Each timing is the best of ``--repeat`` runs. When
the ``unicorn`` package is installed (``pip install -e '.[bench]'``, as
``make bench`` does), the same workloads also run on Unicorn, QEMU's TCG as
a library.
"""

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "baremetal"))

import build as baremetal  # noqa: E402
import debugging  # noqa: E402
import hypervisor  # noqa: E402
import network  # noqa: E402
import throughput  # noqa: E402

WORKLOADS = os.path.join(ROOT, "benchmarks", "workloads")
OUT = os.path.join(ROOT, "build", "bench")
QEMU_CPU = "rv64,v=false,zba=false,zbb=false,zbc=false,zbs=false,svpbmt=false"
FLOATING_POINT = {"nbody"}   # the others are integer workloads
STATS = re.compile(rb"hartvm: (\d+) instructions in ([0-9.]+) s")


def timed(command, env=None):
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, env=env, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                           f"{result.stderr.decode(errors='replace')}")
    return elapsed, result


def hartvm_command(elf):
    return [sys.executable, "-m", "hartvm", "boot", "--bios", "none", "--kernel", elf, "--stats"]


def run_hartvm(elf, repeat):
    best = None
    for _ in range(repeat):
        wall, result = timed(hartvm_command(elf))
        match = STATS.search(result.stderr)
        instructions, loop_seconds = int(match.group(1)), float(match.group(2))
        if best is None or wall < best[0]:
            best = (wall, instructions, loop_seconds, result.stdout)
    return best


def run_qemu(elf, repeat):
    command = ["qemu-system-riscv64", "-M", "virt", "-cpu", QEMU_CPU, "-bios", "none",
               "-kernel", elf, "-nographic", "-monitor", "none", "-serial", "stdio"]
    best = None
    for _ in range(repeat):
        wall, result = timed(command)
        if best is None or wall < best[0]:
            best = (wall, result.stdout)
    return best


def run_unicorn(elf, repeat):
    """(seconds in the engine, console output) under Unicorn (QEMU's TCG as a library).

    Unicorn has no board: RAM, the UART's THR/LSR and the test finisher are
    mapped here, the ELF's segments copied in, and the run starts at its
    entry point. None when the unicorn package is not installed.
    """
    try:
        import unicorn
        from elftools.elf.elffile import ELFFile
    except ImportError:
        return None
    best = None
    for _ in range(repeat):
        engine = unicorn.Uc(unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64)
        engine.mem_map(0x8000_0000, 64 << 20)
        with open(elf, "rb") as file:
            image = ELFFile(file)
            entry = image["e_entry"]
            for segment in image.iter_segments():
                if segment["p_type"] == "PT_LOAD":
                    engine.mem_write(segment["p_paddr"], segment.data())
        output = bytearray()

        def uart_write(engine, offset, size, value, _):
            if offset == 0:
                output.append(value & 0xFF)

        engine.mmio_map(0x1000_0000, 0x1000, lambda e, offset, size, _: 0x60 if offset == 5 else 0,
                        None, uart_write, None)
        engine.mmio_map(0x10_0000, 0x1000, lambda e, offset, size, _: 0, None,
                        lambda e, offset, size, value, _: e.emu_stop(), None)
        started = time.perf_counter()
        engine.emu_start(entry, 0)
        seconds = time.perf_counter() - started
        if best is None or seconds < best[0]:
            best = (seconds, bytes(output))
    return best


BOOT_INIT = b"""#!/bin/sh
echo "hello from /init"
/bin/busybox poweroff -f
"""


def linux_boot(repeat, append="console=ttyS0"):
    """Boot to /init and power off: OpenSBI + Debian's kernel + a busybox initramfs.

    Returns (hartvm wall s, QEMU wall s, instructions, loop s); both get the
    same firmware, kernel, initramfs, memory and command line.
    """
    from hartvm.guest import debian
    from hartvm.guest.initramfs import Initramfs

    guest = debian.default_guest(progress=False)
    fs = Initramfs().file("bin/busybox", guest.busybox.read_bytes(), 0o755)
    fs.symlink("bin/sh", "busybox").char_device("dev/console", 5, 1)
    fs.file("init", BOOT_INIT, 0o755)
    initrd = os.path.join(OUT, "boot-initrd.cpio")
    with open(initrd, "wb") as file:
        file.write(fs.build())
    common = ["-kernel", str(guest.kernel), "-initrd", initrd, "-append", append]
    qemu = ["qemu-system-riscv64", "-M", "virt", "-cpu", QEMU_CPU, "-m", "128M", "-nographic",
            "-monitor", "none", "-serial", "stdio", "-bios", str(guest.firmware), *common]
    hartvm = [sys.executable, "-m", "hartvm", "boot", "--bios", str(guest.firmware), "--stats",
              *[arg.replace("-kernel", "--kernel").replace("-initrd", "--initrd")
                .replace("-append", "--append") if arg.startswith("-") else arg for arg in common]]
    best = None
    for _ in range(repeat):
        wall, result = timed(hartvm)
        if b"hello from /init" not in result.stdout:
            raise RuntimeError("hartvm: the boot did not reach /init")
        match = STATS.search(result.stderr)
        if best is None or wall < best[0]:
            best = (wall, int(match.group(1)), float(match.group(2)))
    qemu_wall = None
    for _ in range(repeat):
        wall, result = timed(qemu)
        if b"hello from /init" not in result.stdout:
            raise RuntimeError("QEMU: the boot did not reach /init")
        qemu_wall = wall if qemu_wall is None else min(qemu_wall, wall)
    return best[0], qemu_wall, best[1], best[2]


def boot_and_run_true(repeat):
    """A booted guest running ``true``, end to end in a fresh process (warm caches,
    no snapshot): what ``hartvm run`` cost before snapshots, and still costs with
    ``--drive``. Returns the best wall time."""
    command = [sys.executable, "-c", "import hartvm; "
               "hartvm.VM(boot=True, progress=False).run(['true'], check=True)"]
    subprocess.run(command, check=True, capture_output=True)     # fetch and build caches
    return min(timed(command)[0] for _ in range(repeat))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("workloads", nargs="*", help="names (default: all)")
    args = parser.parse_args()
    names = args.workloads or sorted(f[:-2] for f in os.listdir(WORKLOADS) if f.endswith(".c"))
    elfs = {name: baremetal.build([os.path.join(WORKLOADS, name + ".c")],
                                  os.path.join(OUT, name + ".elf")) for name in names}
    demo = baremetal.build([os.path.join(ROOT, "examples", "hello.c")], os.path.join(OUT, "hello.elf"))

    # Cold start first: an empty numba cache forces every function to compile.
    with tempfile.TemporaryDirectory() as cache:
        cold, _ = timed(hartvm_command(demo), env={**os.environ, "NUMBA_CACHE_DIR": cache})
    warm = min(timed(hartvm_command(demo))[0] for _ in range(3))

    print(f"{'workload':<10} {'hartvm s':>9} {'QEMU s':>8} {'ratio':>7} {'MIPS':>7} "
          f"{'instructions':>14} {'loop s':>7} {'Unicorn s':>10}")
    all_mips = []
    for name, elf in elfs.items():
        wall, instructions, loop_seconds, output = run_hartvm(elf, args.repeat)
        qemu_wall, qemu_output = run_qemu(elf, args.repeat)
        if output != qemu_output:
            raise RuntimeError(f"{name}: hartvm and QEMU printed different output")
        mips = instructions / loop_seconds / 1e6
        all_mips.append(mips)
        unicorn = run_unicorn(elf, args.repeat)
        if unicorn is not None and unicorn[1] != output:
            raise RuntimeError(f"{name}: hartvm and Unicorn printed different output")
        unicorn_text = f"{unicorn[0]:10.2f}" if unicorn else f"{'-':>10}"
        print(f"{name:<10} {wall:9.2f} {qemu_wall:8.2f} {wall / qemu_wall:6.1f}x {mips:7.1f} "
              f"{instructions:14,} {loop_seconds:7.2f} {unicorn_text}")
    integer = [mips for name, mips in zip(elfs, all_mips) if name not in FLOATING_POINT]
    geomean = math.exp(sum(math.log(m) for m in integer) / len(integer))
    print(f"integer workloads, geometric mean: {geomean:.1f} MIPS (target >= 100)")
    for name, mips in zip(elfs, all_mips):
        if name in FLOATING_POINT:
            print(f"floating point: {name} {mips:.1f} MIPS, {geomean / mips:.1f}x slower than the "
                  f"integer mean per instruction (target <= 2x)")
    print("hartvm s / QEMU s: whole processes; loop s: hartvm's run loop alone, the figure "
          "to compare with Unicorn s (its engine alone)")
    wall, qemu_wall, instructions, loop_seconds = linux_boot(args.repeat)
    print(f"{'linux boot':<10} {wall:9.2f} {qemu_wall:8.2f} {wall / qemu_wall:6.1f}x "
          f"{instructions / loop_seconds / 1e6:7.1f} {instructions:14,} {loop_seconds:7.2f}"
          f"   (OpenSBI + Debian kernel to /init and power-off; target ratio <= 4x)")
    # QEMU boots to /init with the command line of hartvm's default guest.
    from hartvm.vmm.vm import BOOTARGS
    append = " ".join(w for w in BOOTARGS.split() if not w.startswith("hartvm."))
    _, qemu_guest_wall, _, _ = linux_boot(args.repeat, append)
    run_wall = boot_and_run_true(args.repeat)
    print(f"{'boot+true':<10} {run_wall:9.2f} {qemu_guest_wall:8.2f} "
          f"{run_wall / qemu_guest_wall:6.1f}x   (the default guest booted, then `true`, end to "
          f"end vs QEMU's boot to /init with '{append}'; target ratio <= 4x)")
    print(f"cold start (empty numba cache, demo program): {cold:.1f} s (target <= 30 s)")
    print(f"warm start (whole demo run, an upper bound on time to first instruction): "
          f"{warm:.2f} s (target <= 1 s)")
    debugging.main({name: elfs[name] for name in ("crc32", "sieve") if name in elfs})
    hypervisor.main(qemu_guest_wall)
    throughput.main()
    network.main()


if __name__ == "__main__":
    main()
