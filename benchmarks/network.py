"""`make bench`, the network: hartvm's virtio-net card and passt against QEMU's ``-netdev user``.

Three figures, each against QEMU in the same run where it has one:

- download: the guest fetches a 100 MiB file of random bytes from an HTTP
  server on the host's loopback (python's ThreadingHTTPServer on 127.0.0.1),
  reached at the gateway address, 10.0.2.2: ``hartvm run --network host --
  wget -q -O /dev/null http://10.0.2.2:PORT/file``. busybox's wget exits
  with an error ("connection closed prematurely") when fewer bytes than the
  Content-Length arrive, so its status 0 proves that all of them did; -O
  /dev/null keeps a pipe and a second program (a second copy of every byte
  in the guest) out of the figure. Each side's time for ``true`` (with the
  network up) is subtracted, as throughput.py does.
- httpd: busybox ``httpd -f -p 80 -h /www`` in a long-running VM (``hartvm up
  --network user -p HOST_PORT:80``), and the host's sequential HTTP GETs of a
  1 KiB file through the published port, one connection each (busybox's
  httpd closes it after a response), for a fixed time: requests a second.
- ``hartvm run --network user -- true`` against ``hartvm run -- true``:
  what a network card adds to a command's latency (medians, taken in turn,
  after a warm-up run of each that starts its run pool).

QEMU boots the same guest (Debian's kernel, hartvm's initramfs and agent,
throughput.QemuGuest) with ``-device virtio-net-device`` on ``-netdev user``
(its 10.0.2.2 is the host's loopback too, and ``hostfwd`` publishes the
port); the bench brings the card up as hartvm does, with the agent's
``network_up`` in a ``SET`` line (vmm/network.py's guest_script). QEMU's
slirp gives the card an MTU of 1500, passt 65520.
"""

import contextlib
import functools
import http.client
import http.server
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from hypervisor import private_state
from throughput import QemuGuest

SIZE = 100 << 20
SMALL = 1 << 10                 # the file the guest's httpd serves
REPEAT = 3                      # downloads, and `true` to subtract
LATENCY_RUNS = 5
HTTP_SECONDS = 5.0
GATEWAY = "10.0.2.2"
QEMU_MAC = "52:54:00:12:34:56"  # QEMU's default for a card
NAMESERVER = "10.0.2.3"
VM_NAME = "bench-httpd"
# Started in the background with its stdio away from the agent's ports (a
# port has one opener at a time: a daemon holding stdin would block the
# next command's).
HTTPD_SCRIPT = (f"mkdir -p /www && dd if=/dev/zero of=/www/small bs={SMALL} count=1 2>/dev/null"
                " && { httpd -f -p 80 -h /www </dev/null >/dev/null 2>&1 & }")


# --- the host's end ---------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def file_server():
    """A host loopback HTTP server of a SIZE-byte random file: yields its port."""
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, "file"), "wb") as file:
            for _ in range(SIZE >> 20):
                file.write(os.urandom(1 << 20))
        handler = functools.partial(_QuietHandler, directory=directory)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def download_argv(port: int) -> list[str]:
    return ["wget", "-q", "-O", "/dev/null", f"http://{GATEWAY}:{port}/file"]


def wait_for_http(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _get(port)
            return
        except (OSError, http.client.HTTPException, RuntimeError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no HTTP server answered on port {port}") from None
            time.sleep(0.2)


def _get(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/small")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200 or body != bytes(SMALL):
        raise RuntimeError(f"GET /small: {response.status}, {len(body)} bytes")


def requests_per_second(port: int) -> float:
    """Sequential GETs of the small file for HTTP_SECONDS, a connection each."""
    wait_for_http(port)
    count = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < HTTP_SECONDS:
        _get(port)
        count += 1
    return count / elapsed


# --- hartvm -------------------------------------------------------------------------------

def _hartvm(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "hartvm", *args], capture_output=True,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"hartvm {' '.join(args)} failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace')[-500:]}")
    return result


def _timed_run(*args: str) -> float:
    started = time.perf_counter()
    _hartvm("run", *args)
    return time.perf_counter() - started


def hartvm_download(port: int) -> tuple[float, float]:
    """(median s of ``run --network host -- true``, median s of the download)."""
    _timed_run("--network", "host", "--", "true")       # the snapshot, the run pool
    trivial = statistics.median(_timed_run("--network", "host", "--", "true")
                                for _ in range(REPEAT))
    seconds = statistics.median(_timed_run("--network", "host", "--", *download_argv(port))
                                for _ in range(REPEAT))
    return trivial, seconds


def hartvm_httpd() -> float:
    port = free_port()
    _hartvm("up", "--network", "user", "-p", f"{port}:80", "--name", VM_NAME)
    try:
        _hartvm("exec", VM_NAME, "--", "sh", "-c", HTTPD_SCRIPT)
        return requests_per_second(port)
    finally:
        subprocess.run([sys.executable, "-m", "hartvm", "stop", VM_NAME], capture_output=True,
                       stdin=subprocess.DEVNULL)


def hartvm_latency() -> tuple[float, float]:
    """Median s of ``run -- true`` and of ``run --network user -- true``, in turn."""
    plain, network = [], []
    _timed_run("--", "true")
    _timed_run("--network", "user", "--", "true")
    for _ in range(LATENCY_RUNS):
        plain.append(_timed_run("--", "true"))
        network.append(_timed_run("--network", "user", "--", "true"))
    return statistics.median(plain), statistics.median(network)


# --- QEMU ---------------------------------------------------------------------------------

def qemu_figures(download_port: int) -> tuple[float, float, float] | None:
    """QEMU's (true s, download s, httpd requests/s), or None without QEMU."""
    if subprocess.run(["sh", "-c", "command -v qemu-system-riscv64"],
                      capture_output=True).returncode != 0:
        return None
    http_port = free_port()
    card = ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{http_port}-:80",
            "-device", f"virtio-net-device,netdev=net0,mac={QEMU_MAC}"]
    with tempfile.TemporaryDirectory() as directory:
        guest = QemuGuest(directory, extra_args=card)
        try:
            # The agent's network_up, as hartvm sends it (Agent.configure).
            guest.sockets["control"].sendall(f"SET 0 network_up {QEMU_MAC} {NAMESERVER}\n"
                                             .encode())
            if (answer := guest._control_line(60)) != b"SET-DONE":
                raise RuntimeError(f"QEMU: the agent answered {answer!r} to SET")
            guest.run(["sh", "-c", f"ip route | grep -q 'default via {GATEWAY}'"])
            trivial = statistics.median(guest.run(["true"]) for _ in range(REPEAT))
            download = statistics.median(guest.run(download_argv(download_port))
                                         for _ in range(REPEAT))
            guest.run(["sh", "-c", HTTPD_SCRIPT])
            rate = requests_per_second(http_port)
        finally:
            guest.close()
    return trivial, download, rate


# --- report -------------------------------------------------------------------------------

def _mb_per_second(seconds: float) -> float:
    return SIZE / seconds / 1e6


def main() -> None:
    with private_state():
        _report()


def _report() -> None:
    with file_server() as port:
        trivial, download = hartvm_download(port)
        rate = hartvm_httpd()
        plain, network = hartvm_latency()
        qemu = qemu_figures(port)
    print(f"{'network':<9} {'hartvm':>11} {'end to end':>11} {'QEMU':>11} {'ratio':>6}   "
          f"(QEMU's -netdev user, the same guest; ratio: QEMU / hartvm)")
    speed = _mb_per_second(download - trivial)
    versus = f"{'-':>11} {'-':>6}"
    if qemu:
        qemu_speed = _mb_per_second(qemu[1] - qemu[0])
        versus = f"{qemu_speed:6.1f} MB/s {qemu_speed / speed:5.1f}x"
    print(f"{'download':<9} {speed:6.1f} MB/s {_mb_per_second(download):6.1f} MB/s {versus}   "
          f"({SIZE >> 20} MiB from a host loopback HTTP server at {GATEWAY}, busybox wget, "
          f"median of {REPEAT}; target >= 30 MB/s)")
    versus = f"{'-':>11} {'-':>6}" if not qemu else f"{qemu[2]:5.0f} req/s {qemu[2] / rate:5.1f}x"
    print(f"{'httpd':<9} {rate:5.0f} req/s {'':>11} {versus}   (sequential GETs of a "
          f"{SMALL >> 10} KiB file from busybox httpd through a published port, "
          f"{HTTP_SECONDS:.0f} s)")
    print(f"(the download's time for `true` subtracted: hartvm {trivial * 1000:.0f} ms"
          + (f", QEMU {qemu[0] * 1000:.0f} ms" if qemu else "") + ")")
    print(f"run --network user -- true: {network * 1000:.0f} ms, run -- true: {plain * 1000:.0f} "
          f"ms, {network / plain:.2f}x (medians of {LATENCY_RUNS}; target <= 2x)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
