"""The hartvm command line: exit statuses, clear one-line errors for bad input, --help."""

import os
import subprocess
import time
import sys

import pytest

from conftest import ROOT, assemble, baremetal, build_c, run_hartvm

LOOP = """
    .section .text.init
    .globl _start
_start:
    j _start
"""
WFI_FOREVER = """
    .section .text.init
    .globl _start
_start:
    wfi
    j _start
"""


def hartvm(*args):
    return subprocess.run([sys.executable, "-m", "hartvm", *args], capture_output=True,
                          text=True, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=120)


def hartvm_cli(*args, input=None):
    """hartvm as a user runs it, with stdin from ``input`` (text) or /dev/null."""
    return subprocess.run([sys.executable, "-m", "hartvm", *args], capture_output=True,
                          text=True, cwd=ROOT, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL, timeout=300)


def assert_clean_error(result, *words):
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert any(all(word in line for word in words) for line in lines), result.stderr
    assert len([line for line in lines if line.startswith("hartvm:")]) == 1


def test_help_documents_every_flag():
    text = hartvm("boot", "--help").stdout
    for flag in ("--kernel", "--bios", "--memory", "--max-instructions", "--stats"):
        assert flag in text
    assert "boot" in hartvm("--help").stdout


def test_missing_kernel_file():
    assert_clean_error(hartvm("boot", "--bios", "none", "--kernel", "/nonexistent/x.elf"),
                       "no such file")


def test_not_an_elf(tmp_path):
    path = tmp_path / "text.elf"
    path.write_text("hello\n")
    assert_clean_error(hartvm("boot", "--bios", "none", "--kernel", str(path)), "not an ELF")


def test_elf_for_another_machine(toolchain, tmp_path):
    data = bytearray(open(build_c("printf"), "rb").read())
    data[18:20] = (62).to_bytes(2, "little")  # e_machine = x86-64
    path = tmp_path / "x86.elf"
    path.write_bytes(bytes(data))
    assert_clean_error(hartvm("boot", "--bios", "none", "--kernel", str(path)), "not a RISC-V 64-bit")


def test_truncated_elf(toolchain, tmp_path):
    data = open(build_c("printf"), "rb").read()
    path = tmp_path / "cut.elf"
    path.write_bytes(data[:200])
    result = hartvm("boot", "--bios", "none", "--kernel", str(path))
    assert_clean_error(result, str(path))


def test_program_too_large_for_its_ram(toolchain):
    """Its segment runs over the device tree at the top of RAM: QEMU refuses it
    for that ("Some ROM regions are overlapping"), and so does hartvm."""
    sieve = build_c("bench-sieve", [os.path.join(ROOT, "benchmarks", "workloads", "sieve.c")])
    assert_clean_error(hartvm("boot", "--bios", "none", "--memory", "1M", "--kernel", sieve),
                       "overlaps the device tree")


def test_segment_over_the_reset_vector(toolchain, tmp_path):
    """QEMU refuses a segment over its reset vector in the boot ROM; hartvm too."""
    script, source = tmp_path / "rom.ld", tmp_path / "rom.S"
    script.write_text("ENTRY(_start) SECTIONS { .text 0x80000000 : { *(.text*) } "
                      ".rom 0x1010 : { LONG(1) } }")
    source.write_text(LOOP)
    elf = str(tmp_path / "rom.elf")
    baremetal.build([str(source)], elf, runtime=False, linker_script=str(script))
    assert_clean_error(hartvm("boot", "--bios", "none", "--kernel", elf), "reset vector")


@pytest.mark.parametrize("size", ["12Q", "0", "-5M", "1000", "3.5G", "2T"])
def test_bad_memory_size(toolchain, size):
    result = hartvm("boot", "--bios", "none", f"--memory={size}", "--kernel", build_c("printf"))
    assert_clean_error(result, size)


def test_instruction_limit(toolchain):
    result = run_hartvm(assemble(LOOP), "--max-instructions", "5000")
    assert result.returncode == 124
    assert b"--max-instructions 5000" in result.stderr


def test_wfi_with_nothing_to_wake_is_reported(toolchain):
    result = run_hartvm(assemble(WFI_FOREVER))
    assert result.returncode == 125
    assert b"wfi" in result.stderr


def test_stats_report_instructions(toolchain):
    result = run_hartvm(build_c("printf"), "--stats")
    assert result.returncode == 0
    assert b"instructions in" in result.stderr and b"MIPS" in result.stderr


def test_trace_lists_each_instruction_with_disassembly(toolchain, tmp_path):
    trace = tmp_path / "trace.txt"
    result = run_hartvm(build_c("printf"), "--trace", str(trace), "--stats")
    assert result.returncode == 0
    lines = trace.read_text().splitlines()
    executed = int(result.stderr.split(b" instructions")[0].split()[-1])
    assert len(lines) == executed
    # the boot ROM's first instructions, as QEMU's virt machine has them
    assert lines[0] == "0 M 0000000000001000: 00000297  auipc t0,0x0  x5=0x1000"
    assert lines[2].endswith("csrrs a0,mhartid,zero")
    assert "jalr zero,0(t0)" in lines[5]


def test_disassembler_agrees_with_objdump(toolchain):
    """Every 32-bit instruction of a compiled program, named as objdump names it."""
    import re
    from hartvm.cpu.disasm import disassemble
    dump = subprocess.run(["riscv64-linux-gnu-objdump", "-d", "-M", "no-aliases",
                           build_c("arith")], capture_output=True, text=True, check=True).stdout
    checked = 0
    for match in re.finditer(r"^\s*[0-9a-f]+:\s+([0-9a-f]{8})\s+(\S+)", dump, re.M):
        word, mnemonic = int(match.group(1), 16), match.group(2)
        ours = disassemble(word).split()[0]
        assert ours == mnemonic, f"{word:08x}: {ours} vs objdump {mnemonic}"
        checked += 1
    assert checked > 100


def test_bare_metal_elf_over_the_firmware_is_refused(toolchain, tmp_path):
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x6f\x00\x00\x00" * 1024)   # a stand-in firmware: j .
    result = hartvm("boot", "--bios", str(firmware), "--kernel", build_c("printf"))
    assert_clean_error(result, "--bios none")


def test_bad_drive_is_a_clean_error(toolchain):
    assert_clean_error(hartvm("boot", "--bios", "none", "--drive", "/nonexistent.img",
                              "--kernel", build_c("printf")), "/nonexistent.img")
    assert_clean_error(hartvm("boot", "--bios", "none", "--drive", "x.img,fast",
                              "--kernel", build_c("printf")), "unknown option")


# --- hartvm run: each of these boots the default guest ----------------------------

def test_run_separates_streams_and_returns_the_status():
    result = hartvm_cli("run", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (result.stdout, result.stderr, result.returncode) == ("out\n", "err\n", 7)


def test_run_forwards_stdin_env_and_workdir():
    result = hartvm_cli("run", "--env", "WHO=guest", "-w", "/tmp", "--",
                        "sh", "-c", 'read line; echo "$line $WHO $(pwd)"; exec no-such-cmd',
                        input="piped in\n")
    assert result.stdout == "piped in guest /tmp\n"
    assert result.returncode == 127 and "no-such-cmd: not found" in result.stderr


def test_run_timeout():
    result = hartvm_cli("run", "--timeout", "2", "--", "sh", "-c", "while :; do :; done")
    assert result.returncode == 124 and "timed out after 2 s" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["run"], "no command given"),
    (["run", "--drive", "/no/such/disk.img", "--", "true"], "/no/such/disk.img"),
    (["run", "--env", "NOEQUALS", "--", "true"], "NAME=VALUE"),
])
def test_run_bad_input_is_one_line_and_status_125(args, message):
    result = hartvm_cli(*args)
    assert result.returncode == 125 and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("image", ["busybox", pytest.param("debian", marks=pytest.mark.image)])
def test_shell_on_a_terminal(image):
    """hartvm shell on a pseudo-terminal: a prompt, a command, the shell's exit status;
    on the Debian image, the shell is bash."""
    import pty
    import select
    import time
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "hartvm", "shell", "--image", image])
    seen = b""

    def read_until(token: bytes, seconds: float) -> bool:
        nonlocal seen
        end = time.monotonic() + seconds
        while token not in seen and time.monotonic() < end:
            if select.select([fd], [], [], 1.0)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
        return token in seen

    try:
        assert read_until(b"# ", 240), seen[-2000:]
        os.write(fd, b"echo $((6 * 7)) bash${BASH_VERSION%%.*}; tty; exit 5\r")
        assert read_until(b"/dev/hvc0", 60), seen[-2000:]
        assert (b"42 bash5" if image == "debian" else b"42 bash\r") in seen
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 5
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_run_output_into_a_closed_pipe_ends_quietly():
    """`hartvm run -- yes | head -1`: the reader goes away; hartvm ends as with SIGPIPE."""
    process = subprocess.Popen([sys.executable, "-m", "hartvm", "run", "--", "yes"], cwd=ROOT,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout.readline() == b"y\n"
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert b"Traceback" not in stderr
    # The run pool's child that ran `yes` for it ends too: nothing spins on.
    from hartvm.vmm.registry import find
    pool = find("run-pool-256m-1").pid
    deadline = time.monotonic() + 10
    while _children(pool) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children(pool) == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


# --- host files that are no files: never read without end, never waited on ------------

@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize("option", ["--kernel", "--bios", "--initrd"])
@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "directory"])
def test_boot_images_must_be_regular_files(option, special, fifo, tmp_path, toolchain):
    path = {"/dev/zero": "/dev/zero", "fifo": fifo, "directory": str(tmp_path)}[special]
    kernel = tmp_path / "Image"
    kernel.write_bytes(bytes(64))             # raw: loaded after the firmware
    files = {"--kernel": str(kernel), "--bios": build_c("printf")}
    files[option] = path
    args = ["boot", "--kernel", files["--kernel"], "--bios", files["--bios"]]
    if option == "--initrd":
        args += ["--initrd", path]
    assert_clean_error(hartvm(*args), "not a regular file")


def test_a_raw_image_larger_than_ram_is_refused_unread(tmp_path):
    image = tmp_path / "huge.bin"
    with open(image, "wb") as file:
        file.truncate(8 << 30)            # sparse: 8 GiB that cost nothing to make
    assert_clean_error(hartvm("boot", "--bios", str(image), "--kernel", str(image)),
                       "do not fit in")


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "directory", "empty"])
def test_drives_must_be_disks(special, fifo, tmp_path, toolchain):
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    path = {"/dev/zero": "/dev/zero", "fifo": fifo, "directory": str(tmp_path),
            "empty": str(empty)}[special]
    for spec in (path, path + ",readonly"):
        assert_clean_error(hartvm("boot", "--bios", "none", "--drive", spec,
                                  "--kernel", build_c("printf")), "drive", path)


def test_too_many_harts_is_one_line(toolchain):
    assert_clean_error(hartvm("boot", "--bios", "none", "--smp", "65",
                              "--kernel", build_c("printf")), "hart count 65")
