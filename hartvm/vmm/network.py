"""A VM's network: the modes, published ports, addresses, and the guest's side.

``--network`` says what the guest's virtio-net card (devices/virtio/net.py)
is plugged into:

- ``none`` (the default): no card at all; a sandbox is closed unless asked;
- ``user``: NAT to the outside world through passt (passt.py), the
  user-mode back end Podman uses; the host's loopback services are not
  reachable from the guest;
- ``host``: as ``user``, and the host's loopback is reachable at the
  gateway address, 10.0.2.2, as with QEMU's user networking.

The guest's addresses are QEMU's (``-netdev user``): 10.0.2.15/24, gateway
10.0.2.2, DNS 10.0.2.3 (passt forwards what is sent there to the host's
resolver), and a MAC of QEMU's locally administered range 52:54:00, new for
every VM, fork and restore. The guest agent brings the card up with busybox
``udhcpc`` before the first command (``guest_script``): passt answers DHCP.

``--publish [HOST_IP:]HOST_PORT:GUEST_PORT[/udp]`` forwards a host port
(on 127.0.0.1 unless said) to the guest. Published ports belong to the VM
that asked: a clone asks for its own.

This module parses and checks; it imports nothing heavy (the CLI uses it).
"""

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from ..errors import HartvmError

NONE, USER, HOST = "none", "user", "host"
MODES = (NONE, USER, HOST)
GUEST_ADDRESS = "10.0.2.15"
PREFIX_LENGTH = 24
GATEWAY = "10.0.2.2"
NAMESERVER = "10.0.2.3"
MAC_PREFIX = bytes((0x52, 0x54, 0x00))     # QEMU's: locally administered, unicast
MAX_PUBLISHED = 64
PUBLISH = re.compile(r"(?:(?P<ip>[0-9.]+|\[[0-9A-Fa-f:.]+\]):)?(?P<host>\d+):(?P<guest>\d+)"
                     r"(?:/(?P<protocol>tcp|udp))?")


@dataclass(frozen=True)
class Published:
    """A host port forwarded to a guest port."""
    host_ip: str
    host_port: int
    guest_port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{ip}:{self.host_port}:{self.guest_port}/{self.protocol}"


def check_mode(mode) -> str:
    if mode not in MODES:
        raise HartvmError(f"bad network {mode!r}: use one of {', '.join(MODES)}")
    return mode


def parse_published(spec) -> Published:
    """``[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]`` (or a Published), checked."""
    if isinstance(spec, Published):
        return spec
    if not isinstance(spec, str):
        raise HartvmError(f"bad port {spec!r}: use [HOST_IP:]HOST_PORT:GUEST_PORT[/udp]")
    match = PUBLISH.fullmatch(spec)
    if match is None:
        raise HartvmError(f"bad port {spec!r}: use [HOST_IP:]HOST_PORT:GUEST_PORT[/udp]")
    ip = (match["ip"] or "127.0.0.1").strip("[]")
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        raise HartvmError(f"bad port {spec!r}: {ip!r} is not an IP address") from None
    ports = int(match["host"]), int(match["guest"])
    if not all(0 < port < 65536 for port in ports):
        raise HartvmError(f"bad port {spec!r}: ports are 1 to 65535")
    return Published(ip, ports[0], ports[1], match["protocol"] or "tcp")


def parse_publish_list(specs, mode: str) -> tuple[Published, ...]:
    """The published ports of a VM in network ``mode``: each once, at most MAX_PUBLISHED."""
    published = tuple(parse_published(spec) for spec in specs or ())
    if published and mode == NONE:
        raise HartvmError("--publish needs a network: add --network user (or host)")
    if len(published) > MAX_PUBLISHED:
        raise HartvmError(f"at most {MAX_PUBLISHED} published ports")
    seen = set()
    for port in published:
        key = (port.host_ip, port.host_port, port.protocol)
        if key in seen:
            raise HartvmError(f"port {port.host_ip}:{port.host_port}/{port.protocol} "
                              f"is published twice")
        seen.add(key)
    return published


def new_mac(seed: bytes) -> bytes:
    """A MAC address of QEMU's range, derived from a VM's identity seed."""
    return MAC_PREFIX + hashlib.sha256(b"mac" + seed).digest()[:3]


def format_mac(mac: bytes) -> str:
    return ":".join(f"{byte:02x}" for byte in mac)


def guest_script(mac: bytes) -> bytes:
    """The agent's shell line that brings the card up with ``mac`` (agent.sh's
    network_up: the address, then DHCP from passt)."""
    return f"network_up {format_mac(mac)} {NAMESERVER}".encode()
