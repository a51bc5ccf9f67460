"""Build bare-metal RISC-V programs for the virt board with Debian's cross gcc.

Used by the Makefile (the demo), the test setup and the benchmarks:

    python3 baremetal/build.py -o build/hello.elf examples/hello.c

C sources are linked with this folder's start-up code and runtime;
assembly-only programs (``--no-runtime``) bring their own ``_start``.
"""

import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CROSS = os.environ.get("CROSS_COMPILE", "riscv64-linux-gnu-")
MARCH = "rv64imafdc_zicsr_zifencei"
CFLAGS = ["-mabi=lp64d", "-mcmodel=medany", "-O2", "-g0", "-ffreestanding", "-fno-builtin",
          "-fno-tree-loop-distribute-patterns", "-fno-pic", "-fno-pie", "-Wall",
          "-fno-asynchronous-unwind-tables", "-nostdlib", "-nostartfiles", "-static", "-no-pie",
          "-Wl,--build-id=none", "-Wl,--no-warn-rwx-segments"]


DEBUG_FLAGS = ("-g", "-O0")       # after CFLAGS: they win over -O2 -g0


class ToolchainMissing(RuntimeError):
    pass


def compiler() -> str:
    gcc = shutil.which(CROSS + "gcc")
    if gcc is None:
        raise ToolchainMissing(f"{CROSS}gcc not found: install Debian's gcc-riscv64-linux-gnu")
    return gcc


def build(sources, output, march=MARCH, runtime=True, linker_script=None, extra=()):
    """Compile and link ``sources`` into the ELF ``output`` (rebuilt only when older)."""
    inputs = list(sources)
    if runtime:
        inputs = [os.path.join(HERE, "crt0.S"), os.path.join(HERE, "runtime.c")] + inputs
    script = linker_script or os.path.join(HERE, "link.ld")
    deps = inputs + [script, os.path.join(HERE, "runtime.h"), __file__]
    if os.path.exists(output) and all(os.path.getmtime(output) >= os.path.getmtime(d) for d in deps):
        return output
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    command = [compiler(), f"-march={march}", *CFLAGS, f"-I{HERE}", "-T", script,
               "-o", output, *inputs, *extra, "-lgcc"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building {output} failed:\n{' '.join(command)}\n{result.stderr}")
    return output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--march", default=MARCH)
    parser.add_argument("--no-runtime", action="store_true")
    parser.add_argument("--debug", action="store_true",
                        help="with debug information and without optimisation (for gdb)")
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args()
    try:
        build(args.sources, args.output, args.march, runtime=not args.no_runtime,
              extra=DEBUG_FLAGS if args.debug else ())
    except (ToolchainMissing, RuntimeError) as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
