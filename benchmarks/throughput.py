"""`make bench`, data through ``hartvm run``: MB/s into the guest (stdin) and out (stdout).

The two transfers of issue 11, 100 MiB each way:

- stdin:  ``head -c 100M /dev/zero | hartvm run -- dd bs=64k iflag=fullblock of=/dev/null``
- stdout: ``hartvm run -- dd if=/dev/zero bs=64k count=1600 | wc -c``

The guest end is busybox's ``dd`` with 64 KiB blocks, which costs the guest
about one instruction a byte; busybox's ``head -c`` and ``wc -c`` go through
stdio a byte at a time (about 29 guest instructions a byte), so with them
the figure would be busybox's, not the channel's. ``iflag=fullblock`` makes
dd's record count prove that every byte arrived.

QEMU runs the same guest (Debian's kernel, hartvm's initramfs, its agent)
with the agent's five ports as virtio-serial ports on Unix sockets, and this
script plays the host end of the agent (guest/agent.py's protocol), so both
move the same bytes through the same guest drivers and programs. Each side's
MB/s subtracts its own time for ``true``, as run.py's ratios do; hartvm's
end-to-end figure (what a user waits for) is printed beside it.
"""

import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from hypervisor import private_state

SIZE = 100 << 20
BLOCK = 64 << 10
REPEAT = 3
STDIN_COMMAND = ["dd", f"bs={BLOCK}", "iflag=fullblock", "of=/dev/null"]
STDOUT_COMMAND = ["dd", "if=/dev/zero", f"bs={BLOCK}", f"count={SIZE // BLOCK}"]
STDIN_PROOF = f"{SIZE // BLOCK}+0 records in".encode()
QEMU_CPU = "rv64,v=false,zba=false,zbb=false,zbc=false,zbs=false,svpbmt=false"
PORTS = ("control", "stdin", "stdout", "stderr", "signal")
TAG = "hartvm"          # the 9p mount tag (vmm/shared_folders.py)
QEMU_BOOT_TIMEOUT = 300
# A 100 MiB file written to a volume and read back, each in a command of its
# own; conv=fsync makes the guest's fsync (a host fsync on both sides) part of
# the write. hartvm's volume and QEMU's -fsdev share the same host directory
# kind and the guest mounts both with hartvm's options (shared_folders.py).
VOLUME = "/vol"
VOLUME_WRITE = ["dd", "if=/dev/zero", f"of={VOLUME}/file", f"bs={BLOCK}",
                f"count={SIZE // BLOCK}", "conv=fsync"]
VOLUME_READ = ["dd", f"if={VOLUME}/file", "of=/dev/null", f"bs={BLOCK}"]
VOLUME_PROOF = (f"{SIZE // BLOCK}+0 records out".encode(), STDIN_PROOF)


# --- hartvm -------------------------------------------------------------------------

def _hartvm(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, image="busybox"):
    return subprocess.Popen([sys.executable, "-m", "hartvm", "run", "--image", image, "--",
                             *args], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)


def issue_commands_seconds() -> tuple[float, float, float]:
    """The commands as a user types them, on the Debian image (coreutils' head and
    wc; busybox's take no "100M" and go a byte at a time): seconds of
    ``run -- true``, ``head -c 100M /dev/zero | hartvm run -- wc -c`` and
    ``hartvm run -- head -c 100M /dev/zero | wc -c``."""
    started = time.perf_counter()
    _hartvm(["true"], image="debian").communicate()
    trivial = time.perf_counter() - started
    head = subprocess.Popen(["head", "-c", "100M", "/dev/zero"], stdout=subprocess.PIPE)
    started = time.perf_counter()
    run = _hartvm(["wc", "-c"], stdin=head.stdout, image="debian")
    head.stdout.close()
    out, err = run.communicate()
    ins = time.perf_counter() - started
    head.wait()
    started = time.perf_counter()
    run = _hartvm(["head", "-c", "100M", "/dev/zero"], image="debian")
    count = subprocess.run(["wc", "-c"], stdin=run.stdout, capture_output=True).stdout
    run.stdout.close()
    run.wait()
    outs = time.perf_counter() - started
    if int(out) != SIZE or int(count) != SIZE:
        raise RuntimeError(f"the Debian image moved {out!r} and {count!r} bytes: {err[-300:]!r}")
    return trivial, ins, outs


def hartvm_stdin_seconds() -> float:
    """``head -c SIZE /dev/zero | hartvm run -- dd ... of=/dev/null``, wall seconds."""
    head = subprocess.Popen(["head", "-c", str(SIZE), "/dev/zero"], stdout=subprocess.PIPE)
    started = time.perf_counter()
    run = _hartvm(STDIN_COMMAND, stdin=head.stdout, stdout=subprocess.DEVNULL)
    head.stdout.close()
    _, err = run.communicate()
    elapsed = time.perf_counter() - started
    head.wait()
    if run.returncode != 0 or STDIN_PROOF not in err:
        raise RuntimeError(f"hartvm stdin transfer failed ({run.returncode}): {err[-300:]!r}")
    return elapsed


def hartvm_stdout_seconds() -> float:
    """``hartvm run -- dd if=/dev/zero ... | wc -c``, wall seconds."""
    started = time.perf_counter()
    run = _hartvm(STDOUT_COMMAND, stdout=subprocess.PIPE)
    count = subprocess.run(["wc", "-c"], stdin=run.stdout, capture_output=True).stdout
    run.stdout.close()
    _, err = run.communicate()
    elapsed = time.perf_counter() - started
    if run.returncode != 0 or int(count) != SIZE:
        raise RuntimeError(f"hartvm stdout transfer failed ({run.returncode}, {count!r} bytes): "
                           f"{err[-300:]!r}")
    return elapsed


def hartvm_true_seconds(volume: str | None = None) -> float:
    options = ["-v", f"{volume}:{VOLUME}"] if volume else []
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hartvm", "run", *options, "--", "true"], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def hartvm_volume_seconds(volume: str, writing: bool) -> float:
    """``hartvm run -v DIR:/vol -- dd ...`` writing or reading the file, wall seconds."""
    command = VOLUME_WRITE if writing else VOLUME_READ
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "hartvm", "run", "-v", f"{volume}:{VOLUME}",
                          "--", *command], capture_output=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if run.returncode != 0 or VOLUME_PROOF[not writing] not in run.stderr or \
            os.path.getsize(os.path.join(volume, "file")) != SIZE:
        raise RuntimeError(f"hartvm volume {'write' if writing else 'read'} failed "
                           f"({run.returncode}): {run.stderr[-300:]!r}")
    return elapsed


# --- QEMU -----------------------------------------------------------------------------

class QemuGuest:
    """hartvm's default guest booted by QEMU, its agent's ports on Unix sockets."""

    def __init__(self, directory: str, volume: str | None = None, extra_args=()):
        from hartvm.guest import debian, rootfs
        from hartvm.vmm.vm import BOOTARGS

        guest = debian.default_guest(progress=False)
        paths = {name: os.path.join(directory, name) for name in PORTS}
        command = ["qemu-system-riscv64", "-M", "virt", "-cpu", QEMU_CPU, "-m", "256M",
                   "-nographic", "-monitor", "none", "-serial", "null",
                   "-bios", str(guest.firmware), "-kernel", str(guest.kernel),
                   "-initrd", str(rootfs.default_initramfs(guest)),
                   "-append", BOOTARGS.format(hostname="qemu"),
                   "-device", "virtio-serial-device,max_ports=8"]
        if volume is not None:
            # virtio-9p on virtio-mmio, the transport hartvm's device uses (-virtfs
            # would put it on PCI); the tag hartvm's guest mounts.
            command += ["-fsdev", f"local,id=vol,path={volume},security_model=none",
                        "-device", f"virtio-9p-device,fsdev=vol,mount_tag={TAG}"]
        for number, name in enumerate(PORTS, start=1):
            command += ["-chardev", f"socket,id={name},path={paths[name]},server=on,wait=off",
                        "-device", f"virtserialport,chardev={name},name=org.hartvm.{name},"
                                   f"nr={number}"]
        command += extra_args              # e.g. a network card (network.py)
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self.sockets = {name: self._connect(path) for name, path in paths.items()}
            self.number = 0
            self._control = self.stderr = b""
            if self._control_line(QEMU_BOOT_TIMEOUT) != b"READY":
                raise RuntimeError("QEMU: the guest agent did not say READY")
        except BaseException:
            self.process.kill()             # no object to close() yet
            self.process.wait()
            raise

    def _connect(self, path: str) -> socket.socket:
        deadline = time.monotonic() + 30
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return sock
            except OSError:
                sock.close()
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"QEMU did not start: "
                                       f"{self.process.stderr.read().decode()[-500:]}") from None
                time.sleep(0.05)

    def _control_line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._control:
            if not select.select([self.sockets["control"]], [], [],
                                 max(deadline - time.monotonic(), 0))[0]:
                raise RuntimeError("QEMU: no answer from the guest agent")
            data = self.sockets["control"].recv(4096)
            if not data:
                raise RuntimeError("QEMU: the guest agent's control port closed")
            self._control += data
        line, _, self._control = self._control.partition(b"\n")
        return line.strip()

    def run(self, argv, stdin_bytes: int = 0, close_stdin: bool = False,
            stdout_bytes: int = 0) -> float:
        """Run ``argv`` through the agent: seconds from RUN until its EXIT and
        ``stdout_bytes`` of output have come. ``stdin_bytes`` zeros are sent, then
        (if ``close_stdin``) the host side of stdin is closed: the guest reads EOF."""
        from hartvm.guest.command import command_script

        self.number += 1
        started = time.perf_counter()
        self.sockets["control"].sendall(b"RUN %d " % self.number + command_script(argv) + b"\n")
        writer = threading.Thread(target=self._send_stdin, args=(stdin_bytes, close_stdin))
        writer.start()
        out, status, self.stderr = 0, None, b""
        stdout, stderr = self.sockets["stdout"], self.sockets["stderr"]
        while status is None or out < stdout_bytes:
            ready = select.select([stdout, stderr, self.sockets["control"]], [], [], 60)[0]
            if not ready:
                raise RuntimeError(f"QEMU: {argv[0]} did not finish ({out} bytes out)")
            if stdout in ready:
                out += len(stdout.recv(1 << 20))
            if stderr in ready:
                self.stderr += stderr.recv(4096)
            if self.sockets["control"] in ready and status is None:
                data = self.sockets["control"].recv(4096)
                if not data:
                    raise RuntimeError("QEMU: the guest agent's control port closed")
                self._control += data
                while status is None and b"\n" in self._control:
                    line, _, self._control = self._control.partition(b"\n")
                    if not line.startswith(b"RUNNING "):   # its output channel: 0, the one here
                        status = line.strip()
        elapsed = time.perf_counter() - started
        writer.join()
        if status != b"EXIT 0" or out != stdout_bytes:
            raise RuntimeError(f"QEMU: {argv[0]} ended with {status!r}, {out} bytes out")
        return elapsed

    def _send_stdin(self, count: int, close: bool) -> None:
        chunk = bytes(1 << 20)
        sock = self.sockets["stdin"]
        while count > 0:
            sock.sendall(chunk[:count])
            count -= len(chunk)
        if close:
            sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.process.kill()
        self.process.wait()


def qemu_figures() -> tuple[float, float, float] | None:
    """QEMU's (true s, stdout transfer s, stdin transfer s), or None without QEMU."""
    if subprocess.run(["sh", "-c", "command -v qemu-system-riscv64"],
                      capture_output=True).returncode != 0:
        return None
    with tempfile.TemporaryDirectory() as directory:
        guest = QemuGuest(directory)
        try:
            trivial = statistics.median(guest.run(["true"]) for _ in range(REPEAT))
            outs = [guest.run(STDOUT_COMMAND, stdout_bytes=SIZE) for _ in range(REPEAT)]
            # Last: closing the host side of stdin ends the socket for good.
            stdin = guest.run(STDIN_COMMAND, SIZE, close_stdin=True)
            if STDIN_PROOF not in guest.stderr:
                raise RuntimeError(f"QEMU: stdin transfer incomplete: {guest.stderr!r}")
        finally:
            guest.close()
    return trivial, statistics.median(outs), stdin


def qemu_volume_figures() -> tuple[float, float, float] | None:
    """QEMU's (true s, volume write s, volume read s) on virtio-9p, or None."""
    from hartvm.vmm.shared_folders import CACHE, MSIZE

    if subprocess.run(["sh", "-c", "command -v qemu-system-riscv64"],
                      capture_output=True).returncode != 0:
        return None
    with tempfile.TemporaryDirectory() as directory, \
            tempfile.TemporaryDirectory(dir=os.path.expanduser("~")) as volume:
        guest = QemuGuest(directory, volume)
        try:
            guest.run(["sh", "-c", f"mkdir -p {VOLUME} && mount -t 9p -o trans=virtio,"
                       f"version=9p2000.L,msize={MSIZE},cache={CACHE} {TAG} {VOLUME}"])
            trivial = statistics.median(guest.run(["true"]) for _ in range(REPEAT))
            writes, reads = [], []
            for _ in range(REPEAT):
                writes.append(guest.run(VOLUME_WRITE))
                if VOLUME_PROOF[0] not in guest.stderr or \
                        os.path.getsize(os.path.join(volume, "file")) != SIZE:
                    raise RuntimeError(f"QEMU: volume write incomplete: {guest.stderr!r}")
                guest.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"])
                reads.append(guest.run(VOLUME_READ))
                if VOLUME_PROOF[1] not in guest.stderr:
                    raise RuntimeError(f"QEMU: volume read incomplete: {guest.stderr!r}")
        finally:
            guest.close()
    return trivial, statistics.median(writes), statistics.median(reads)


# --- report ------------------------------------------------------------------------------

def _rate(seconds: float) -> float:
    return SIZE / seconds / 1e6


def main() -> None:
    with private_state():
        _report()


def _report() -> None:
    hartvm_true_seconds()                       # start the run pool, warm every cache
    trivial = statistics.median(hartvm_true_seconds() for _ in range(REPEAT))
    ins = statistics.median(hartvm_stdin_seconds() for _ in range(REPEAT))
    outs = statistics.median(hartvm_stdout_seconds() for _ in range(REPEAT))
    qemu = qemu_figures()
    print(f"{'transfer':<8} {'hartvm MB/s':>12} {'end to end':>11} {'QEMU MB/s':>10} "
          f"{'ratio':>6}   ({SIZE >> 20} MiB, medians of {REPEAT}; target >= 50 MB/s)")
    _print_rates((("stdin", ins, qemu and qemu[2]), ("stdout", outs, qemu and qemu[1])),
                 trivial, qemu)
    print(f"(each side's time for `true` subtracted: hartvm {trivial * 1000:.0f} ms"
          + (f", QEMU {qemu[0] * 1000:.0f} ms" if qemu else "") + "; QEMU runs the same "
          "guest and agent, its ports on Unix sockets)")
    _report_volume(trivial)
    debian_true, *debian = issue_commands_seconds()
    print(f"the issue's commands on --image debian (coreutils head and wc): stdin "
          f"{_rate(debian[0] - debian_true):.1f} MB/s, stdout {_rate(debian[1] - debian_true):.1f} "
          f"MB/s ({_rate(debian[0]):.1f} and {_rate(debian[1]):.1f} end to end)")


def _print_rates(rows, trivial: float, qemu) -> None:
    """One line per (name, hartvm seconds, QEMU seconds) row: MB/s with each side's
    time for `true` (``trivial``, ``qemu[0]``) taken off, end to end, and QEMU's."""
    for name, seconds, qemu_seconds in rows:
        rate = _rate(seconds - trivial)
        if qemu:
            qemu_rate = _rate(qemu_seconds - qemu[0])
            versus = f"{qemu_rate:10.1f} {qemu_rate / rate:5.1f}x"
        else:
            versus = f"{'-':>10} {'-':>6}"
        print(f"{name:<8} {rate:12.1f} {_rate(seconds):11.1f} {versus}")


def _report_volume(plain_true: float) -> None:
    """Write then read a 100 MiB file on a volume (virtio-9p), hartvm and QEMU."""
    # In the home directory: /tmp may be a tmpfs, which no user's volume is.
    with tempfile.TemporaryDirectory(dir=os.path.expanduser("~")) as volume:
        hartvm_true_seconds(volume)
        trivial = statistics.median(hartvm_true_seconds(volume) for _ in range(REPEAT))
        writes, reads = [], []
        for _ in range(REPEAT):
            writes.append(hartvm_volume_seconds(volume, writing=True))
            reads.append(hartvm_volume_seconds(volume, writing=False))
    qemu = qemu_volume_figures()
    print(f"{'volume':<8} {'hartvm MB/s':>12} {'end to end':>11} {'QEMU MB/s':>10} "
          f"{'ratio':>6}   (a {SIZE >> 20} MiB file on virtio-9p, medians of {REPEAT}; "
          f"target >= 50 MB/s and >= QEMU)")
    _print_rates((("write", statistics.median(writes), qemu and qemu[1]),
                  ("read", statistics.median(reads), qemu and qemu[2])), trivial, qemu)
    print(f"(`run -v DIR:{VOLUME} -- true` takes {trivial * 1000:.0f} ms, "
          f"{plain_true * 1000:.0f} ms without -v; subtracted, as QEMU's "
          + (f"{qemu[0] * 1000:.0f} ms" if qemu else "") + " for `true`)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
