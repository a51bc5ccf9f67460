"""Test set-up: builds guest programs from the sources in the repo with Debian's cross gcc.

``asm_program(source)`` assembles a bare-metal snippet (wrapped by
``SNIPPET_TEMPLATE``) and returns a fresh Machine with it loaded;
``c_program(path)`` builds a C program with the bare-metal runtime.
"""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "baremetal"))

import build as baremetal  # noqa: E402

from hartvm import HostIO, Machine  # noqa: E402

PROGRAMS = os.path.join(ROOT, "tests", "programs")
FINISHER_PASS = """
    li t6, 0x100000
    li t5, 0x5555
    sw t5, 0(t6)
1:  j 1b
"""

# PMP entry 0 granting RWX on all memory (NAPOT of the whole address space), as
# OpenSBI and xv6 set it up: S- and U-mode can reach no memory without a PMP
# entry (privileged spec 3.7.1; QEMU 7.2 and hartvm deny them). Snippets that
# drop to S/U-mode run it first.
PMP_ALLOW_ALL = """
    li t0, -1
    csrw pmpaddr0, t0
    li t0, 0x1f
    csrw pmpcfg0, t0
"""

# Snippets run in M-mode from 0x80000000 with a trap handler that records
# mcause/mepc/mtval in s9/s10/s11 and skips the faulting instruction; it
# uses t5 and t6. gp points 2048 bytes into a 4 KiB data area.
SNIPPET_TEMPLATE = """
    .section .text.init
    .globl _start
_start:
    la t0, trap_handler
    csrw mtvec, t0
    li s9, -1
    la gp, data + 2048          /* gp-relative offsets -2048..2047 */
{body}
{finish}
    .align 2
trap_handler:
    csrr s9, mcause
    csrr s10, mepc
    csrr s11, mtval
    bltz s9, 3f                 /* interrupts return to the same pc */
    lhu t6, 0(s10)
    andi t6, t6, 3
    addi s10, s10, 2
    li t5, 3
    bne t6, t5, 2f
    addi s10, s10, 2
2:  csrw mepc, s10
3:  mret
    .data
    .align 6
data:
    .space 4096
"""


def _build_dir():
    path = os.path.join(ROOT, "build", "tests")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def toolchain():
    """The cross compiler; the tests cannot run without it (make test installs it)."""
    return baremetal.compiler()


def assemble(source: str, march: str = baremetal.MARCH) -> str:
    """Assemble a complete program (its own _start) into an ELF; cached by content."""
    digest = hashlib.sha256((march + source).encode()).hexdigest()[:20]
    out = os.path.join(_build_dir(), f"asm-{digest}.elf")
    if not os.path.exists(out):
        src = out[:-4] + ".S"
        with open(src, "w") as file:
            file.write(source)
        baremetal.build([src], out + ".tmp", march=march, runtime=False)
        os.replace(out + ".tmp", out)
    return out


@pytest.fixture
def asm_program(toolchain):
    """asm_program(body) -> Machine loaded with the snippet, not yet run."""
    def make(body: str, finish: str = FINISHER_PASS, memory: int = 16 << 20, output=None):
        elf = assemble(SNIPPET_TEMPLATE.format(body=body, finish=finish))
        machine = Machine(memory_size=memory, io=HostIO(output=output or (lambda data: None)))
        machine.load_kernel(elf)
        return machine
    return make


def build_c(name: str, sources=None) -> str:
    sources = sources or [os.path.join(PROGRAMS, name + ".c")]
    return baremetal.build(sources, os.path.join(_build_dir(), name + ".elf"))


@pytest.fixture(scope="session")
def qemu():
    path = shutil.which("qemu-system-riscv64")
    if path is None:
        pytest.fail("qemu-system-riscv64 not found: install Debian's qemu-system-misc (make test does)")
    return path


QEMU_CPU = "rv64,v=false,zba=false,zbb=false,zbc=false,zbs=false,svpbmt=false"


def run_qemu(qemu_path: str, elf: str, *extra: str, timeout: float = 60):
    """(stdout bytes, exit status) of a bare-metal ELF under QEMU; ``extra``
    options go to QEMU's command line (e.g. a -drive and its -device)."""
    result = subprocess.run(
        [qemu_path, "-M", "virt", "-cpu", QEMU_CPU, "-bios", "none", "-kernel", elf,
         "-nographic", "-monitor", "none", "-serial", "stdio", *extra],
        capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return result.stdout, result.returncode


def run_hartvm(elf: str, *extra: str, timeout: float = 120):
    """The hartvm CLI on a bare-metal ELF: the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "hartvm", "boot", "--bios", "none", "--kernel", elf, *extra],
        capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=ROOT)


@pytest.fixture(autouse=True, scope="session")
def private_state_dir(tmp_path_factory):
    """Long-running VMs and run pools that tests start live in a directory of the
    test session's own (the user's VMs stay out of reach), and are stopped at the end."""
    directory = tmp_path_factory.mktemp("hartvm-state")
    os.environ["HARTVM_STATE_DIR"] = str(directory)
    yield directory
    from hartvm.vmm.client import RemoteVM
    from hartvm.vmm.registry import list_vms
    for info in list_vms():
        RemoteVM(info.name).stop()


def smaps_overlapping(start: int, size: int = 1) -> list[dict]:
    """This process's mappings that overlap [start, start + size), from
    /proc/self/smaps: one dict each, field name -> the text after its colon."""
    entries, current = [], None
    for line in open("/proc/self/smaps"):
        first = line.split(maxsplit=1)[0]
        if "-" in first and ":" not in first:            # a mapping's header line
            low, high = (int(x, 16) for x in first.split("-"))
            current = {} if low < start + size and start < high else None
            if current is not None:
                entries.append(current)
        elif current is not None:
            name, _, value = line.partition(":")
            current[name] = value.strip()
    return entries


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    """A state directory of the test module's own (``$HARTVM_STATE_DIR``): the
    VMs it starts are listed alone, and stopped when the module ends."""
    directory = tmp_path_factory.mktemp("state")
    old = os.environ.get("HARTVM_STATE_DIR")
    os.environ["HARTVM_STATE_DIR"] = str(directory)
    yield directory
    from hartvm.vmm.client import RemoteVM
    from hartvm.vmm.registry import list_vms
    for info in list_vms():
        RemoteVM(info.name).stop()
    if old is None:
        del os.environ["HARTVM_STATE_DIR"]
    else:
        os.environ["HARTVM_STATE_DIR"] = old
