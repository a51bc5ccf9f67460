"""The VM process's control protocol: frames, and room for a command's streams."""

import socket

from hartvm.vmm import protocol


def test_widen_gives_a_connection_room_for_megabytes_in_flight():
    with open("/proc/sys/net/core/wmem_max") as file:
        allowed = int(file.read())
    first, second = socket.socketpair()
    with first, second:
        default = first.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        protocol.widen(first)
        widened = first.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        # Linux doubles the value asked for (socket(7)) and caps it at wmem_max.
        assert widened >= min(protocol.STREAM_BUFFER, allowed)
        assert widened > default or allowed <= default
    protocol.widen(first)                   # a closed socket: nothing happens


def test_frames_round_trip():
    first, second = socket.socketpair()
    with first, second:
        protocol.send_frame(first, protocol.OUT, b"\0" * 70000)
        protocol.send_json(first, protocol.REPLY, {"ok": True})
        assert protocol.recv_frame(second) == (protocol.OUT, b"\0" * 70000)
        kind, payload = protocol.recv_frame(second)
        assert kind == protocol.REPLY and protocol.decode_json(payload) == {"ok": True}
