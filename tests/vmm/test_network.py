"""Networking through a real guest and a real passt, with nothing but the host's loopback.

A guest ``wget`` fetches a host file from 127.0.0.1 through ``--network
host`` (checked by SHA-256) and not through ``user`` or ``none``; a server
in the guest answers on a published port, TCP and UDP; DNS queries reach the
host's resolver (one of the test's, in a mount namespace of its own); a passt
killed mid-transfer is reported and the VM runs on; snapshots, forks and
the run pool each plug a new passt with a new MAC. The device's own tests
(hostile frames from a driver, the framing to passt) are in
tests/devices/test_virtio_net.py.
"""

import functools
import hashlib
import http.server
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import hartvm
from conftest import ROOT
from hartvm.errors import HartvmError
from hartvm.vmm import network

pytestmark = pytest.mark.skipif(shutil.which("passt") is None, reason="make test installs passt")
HARTVM = [sys.executable, "-m", "hartvm"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """A response that trickles for a minute: a transfer to break in the middle."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(60 * 100 * 1024))
        self.end_headers()
        try:
            for _ in range(600):
                self.wfile.write(bytes(1024 * 10))
                time.sleep(0.1)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def serve(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A host HTTP server on 127.0.0.1 with a 3 MiB file: (port, its bytes)."""
    directory = tmp_path_factory.mktemp("www")
    data = os.urandom(3 << 20)
    (directory / "file").write_bytes(data)
    server = serve(functools.partial(QuietHandler, directory=str(directory)))
    yield server.server_address[1], data
    server.shutdown()


@pytest.fixture(scope="module")
def host_vm():
    with hartvm.VM(network="host", progress=False) as vm:
        yield vm


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch_digest(vm, port) -> str:
    result = vm.run(["sh", "-c", f"timeout 60 wget -qO- http://10.0.2.2:{port}/file | sha256sum"],
                    timeout=120)
    return result.stdout.split()[0].decode() if result.stdout else ""


def test_host_network_fetches_a_file_from_the_hosts_loopback(host_vm, files):
    port, data = files
    assert fetch_digest(host_vm, port) == hashlib.sha256(data).hexdigest()


def test_the_guest_has_qemus_addresses_and_a_mac_of_its_own(host_vm):
    result = host_vm.run(["sh", "-c", "ip -o addr show eth0; ip route; cat /etc/resolv.conf "
                                      "/sys/class/net/eth0/mtu /sys/class/net/eth0/address"])
    out = result.stdout.decode()
    assert "inet 10.0.2.15/24" in out and "default via 10.0.2.2" in out
    assert "nameserver 10.0.2.3" in out and "\n65520\n" in out
    mac = network.format_mac(host_vm.card.device.mac)
    assert mac.startswith("52:54:00:") and out.endswith(mac + "\n")


def test_user_network_does_not_reach_the_hosts_loopback(files):
    port, data = files
    with hartvm.VM(network="user", progress=False) as vm:
        assert fetch_digest(vm, port) != hashlib.sha256(data).hexdigest()
        assert vm.run(["cat", "/sys/class/net/eth0/carrier"]).stdout == b"1\n"


def test_no_network_is_the_default(files):
    port, _ = files
    with hartvm.VM(progress=False) as vm:
        assert "net" not in vm.machine.board.virtio
        result = vm.run(["sh", "-c", f"ls /sys/class/net; wget -qO- http://10.0.2.2:{port}/file"])
    assert result.stdout == b"lo\n" and result.returncode != 0


def test_run_network_host_returns_the_hosts_file(files):
    """The issue's own command, through the run pool."""
    port, data = files
    result = subprocess.run(HARTVM + ["run", "--network", "host", "--", "wget", "-qO-",
                                      f"http://10.0.2.2:{port}/file"],
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


def test_each_run_gets_a_new_mac():
    macs = [subprocess.run(HARTVM + ["run", "--network", "user", "--", "cat",
                                     "/sys/class/net/eth0/address"],
                           capture_output=True, text=True, timeout=300).stdout for _ in range(2)]
    assert all(mac.startswith("52:54:00:") for mac in macs) and macs[0] != macs[1]


def test_a_published_port_reaches_a_server_in_the_guest_and_stays_with_its_vm(state_dir):
    port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    name = "web"
    subprocess.run(HARTVM + ["up", "--name", name, "--network", "user", "-p", f"{port}:80",
                             "-p", f"{udp_port}:7/udp"], check=True, timeout=300)
    page = os.urandom(8).hex()
    subprocess.run(HARTVM + ["exec", name, "--", "sh", "-c",
                             f"mkdir -p /www && echo {page} > /www/index.html && "
                             f"httpd -p 80 -h /www"],
                   check=True, timeout=120)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=30) as answer:
        assert answer.read().decode().strip() == page
    # The UDP port is passt's (Debian's busybox has no UDP server to answer on it).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(OSError):
            sock.bind(("127.0.0.1", udp_port))
    # A clone has a network of its own, without the parent's ports: the port
    # still reaches the parent's server.
    clone = subprocess.run(HARTVM + ["fork", name], capture_output=True, text=True,
                           check=True, timeout=300).stdout.split()[0]
    out = subprocess.run(HARTVM + ["exec", clone, "--", "sh", "-c",
                                   "cat /sys/class/net/eth0/address; ip -o addr show eth0"],
                         capture_output=True, text=True, timeout=120).stdout
    parent_mac = subprocess.run(HARTVM + ["exec", name, "--", "cat",
                                          "/sys/class/net/eth0/address"],
                                capture_output=True, text=True, timeout=120).stdout
    assert "inet 10.0.2.15/24" in out and out.split()[0] != parent_mac.strip()
    subprocess.run(HARTVM + ["stop", clone], check=True, timeout=60)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=30) as answer:
        assert answer.read().decode().strip() == page


def test_a_port_in_use_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(HARTVM + ["run", "--network", "user", "-p", f"{port}:80",
                                          "--", "true"], capture_output=True, text=True,
                                timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip() == f"hartvm: VM run-pool-256m-1-net: cannot publish " \
                                    f"127.0.0.1:{port}: the port is in use"


@pytest.mark.parametrize("spec", ["80", "a:80", "0:80", "70000:80", "1.2.3:80:80",
                                  "8080:80/sctp", "8080:80:90"])
def test_bad_publish_specs_are_one_line_errors(spec):
    with pytest.raises(HartvmError):
        network.parse_published(spec)
    result = subprocess.run(HARTVM + ["run", "--network", "user", "-p", spec, "--", "true"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("hartvm: error: argument --publish/-p")


def test_publish_needs_a_network():
    result = subprocess.run(HARTVM + ["run", "-p", "8080:80", "--", "true"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr == "hartvm: --publish needs a network: add --network user (or host)\n"


def test_published_specs_parse_as_docker_writes_them():
    assert network.parse_published("8080:80") == network.Published("127.0.0.1", 8080, 80, "tcp")
    assert network.parse_published("0.0.0.0:53:5353/udp") == \
        network.Published("0.0.0.0", 53, 5353, "udp")


DNS_SCRIPT = """
import hartvm
with hartvm.VM(network="user", progress=False) as vm:
    result = vm.run(["nslookup", "answered.example.test"])
    print(result.stdout.decode())
"""


class Resolver:
    """A UDP DNS server on 127.0.0.1 that answers every A question with ADDRESS."""
    ADDRESS = "192.0.2.77"

    def __init__(self, port: int = 0):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", port))
        self.port = self.socket.getsockname()[1]
        self.queries = []
        threading.Thread(target=self._answer, daemon=True).start()

    def _answer(self):
        while True:
            try:
                query, peer = self.socket.recvfrom(512)
                self.queries.append(query)
                self.socket.sendto(_dns_answer(query, socket.inet_aton(self.ADDRESS)), peer)
            except OSError:
                return

    def close(self):
        self.socket.close()


def _dns_answer(query: bytes, address: bytes) -> bytes:
    """An A record for the question of ``query`` (RFC 1035 4.1)."""
    question_end = 12
    while query[question_end]:
        question_end += 1 + query[question_end]
    question = query[12:question_end + 5]
    header = query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1 if question[-4:-2] == b"\0\1"
                                     else 0, 0, 0)
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + address
    return header + question + (answer if question[-4:-2] == b"\0\1" else b"")


def test_dns_queries_reach_the_hosts_resolver(tmp_path):
    """passt forwards what the guest sends to 10.0.2.3 to the host's first
    nameserver: here a resolver of the test's on 127.0.0.1:53, made the host's
    by a mount namespace with a resolv.conf of its own."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root for port 53 and a mount namespace")
    try:
        resolver = Resolver(53)
    except OSError as error:
        pytest.skip(f"port 53 is taken: {error}")
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    try:
        result = subprocess.run(
            ["unshare", "--mount", "sh", "-c", f"mount --bind {tmp_path}/resolv.conf "
             f"/etc/resolv.conf && exec {sys.executable} -c '{DNS_SCRIPT}'"],
            capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        resolver.close()
    assert result.returncode == 0, result.stderr
    assert Resolver.ADDRESS in result.stdout and resolver.queries


def test_a_udp_round_trip_to_the_host(host_vm):
    """A DNS question from the guest to a UDP server on the host's loopback, and
    its answer back."""
    resolver = Resolver()
    try:
        result = host_vm.run(["nslookup", "round.trip.test", f"10.0.2.2:{resolver.port}"],
                             timeout=60)
    finally:
        resolver.close()
    assert Resolver.ADDRESS in result.stdout.decode(), result
    assert b"round" in resolver.queries[0]


def test_a_killed_passt_is_reported_and_the_vm_runs_on():
    slow = serve(SlowHandler)
    port = slow.server_address[1]
    try:
        with hartvm.VM(network="host", progress=False) as vm:
            passt = vm.card.passt.process
            killer = threading.Timer(3.0, passt.kill)
            killer.start()
            started = time.monotonic()
            result = vm.run(["sh", "-c", f"wget -T 5 -O /dev/null http://10.0.2.2:{port}/; "
                                         f"echo wget=$?"], timeout=120)
            killer.join()
            assert time.monotonic() - started < 60
            assert result.stdout != b"wget=0\n" and b"wget=" in result.stdout
            assert "passt ended (killed by signal 9)" in vm.network_error
            after = vm.run(["cat", "/sys/class/net/eth0/carrier"])
            assert after.returncode == 0 and after.stdout == b"0\n"
    finally:
        slow.shutdown()


def test_snapshots_keep_the_card_and_restores_plug_a_new_passt(tmp_path, files):
    port, data = files
    with hartvm.VM(network="host", progress=False) as vm:
        first_mac = vm.card.device.mac
        assert vm.run(["cat", "/sys/class/net/eth0/carrier"]).stdout == b"1\n"
        vm.snapshot(tmp_path / "snap")
    with hartvm.VM.restore(tmp_path / "snap", network="host") as clone:
        assert clone.card.device.mac != first_mac
        assert fetch_digest(clone, port) == hashlib.sha256(data).hexdigest()
    with hartvm.VM.restore(tmp_path / "snap") as unplugged:
        assert unplugged.card.passt is None
        assert unplugged.run(["cat", "/sys/class/net/eth0/carrier"]).stdout == b"0\n"
    with hartvm.VM(progress=False) as plain:
        plain.snapshot(tmp_path / "plain")
    with pytest.raises(HartvmError, match="no network card"):
        hartvm.VM.restore(tmp_path / "plain", network="user")


def test_in_process_forks_get_their_own_passt(host_vm, files):
    port, data = files
    clones = host_vm.fork(2)
    try:
        passts = {clone.card.passt.process.pid for clone in clones}
        assert len(passts) == 2 and host_vm.card.passt.process.pid not in passts
        for clone in clones:
            assert fetch_digest(clone, port) == hashlib.sha256(data).hexdigest()
    finally:
        for clone in clones:
            clone.close()
    assert all(clone.card.passt is None for clone in clones)


def test_a_snapshot_whose_network_card_flag_is_not_a_bool_is_refused(tmp_path):
    import numpy as np
    from hartvm.vmm import snapshot
    with hartvm.VM(progress=False) as plain:
        plain.snapshot(tmp_path / "snap")
    sections = snapshot.read_state(tmp_path / "snap")
    version, vm_state = sections["vm"]
    for hostile in (np.zeros(4, np.int64), "yes", 1):
        sections["vm"] = (version, {**vm_state, "network_card": hostile})
        snapshot.write_state(tmp_path / "snap" / "state",
                             [(name, v, value) for name, (v, value) in sections.items()])
        with pytest.raises(hartvm.SnapshotError, match="network_card"):
            hartvm.VM.restore(tmp_path / "snap")
