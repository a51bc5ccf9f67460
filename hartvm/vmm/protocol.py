"""The control protocol of a VM process: frames over its Unix socket.

One connection carries one request. The client sends a REQUEST frame (a
JSON object with an ``op``); for ``exec`` everything it sends after that
frame is the command's stdin, ended by shutting down its sending side. The
VM process answers with OUT and ERR frames (the command's stdout and
stderr, raw) and ends with one REPLY frame (a JSON object: ``ok`` and the
results, or ``error`` with the exit status a CLI should give).

An ``exec`` with a ``terminal`` (``exec -t``, ``shell NAME``) runs on the
guest's terminal instead, and what the client sends after the request is
frames too (``TerminalInput`` reads them): KEYS (what is typed) and RESIZE
(a JSON object with ``rows`` and ``columns``: the window changed).

A frame is its kind (1 byte), the payload's length (u32, big-endian) and
the payload. Importable without numpy, for the light commands.
"""

import json
import socket
import struct

REQUEST, OUT, ERR, REPLY = b"Q", b"1", b"2", b"R"
KEYS, RESIZE = b"0", b"W"          # a terminal's client to the VM process
MAX_TERMINAL_FRAME = 1 << 16
MAX_TERMINAL_SIZE = 1000           # rows or columns, at most
HEADER = struct.Struct(">cI")
MAX_FRAME = 16 << 20
# A command's stdin and output stream through its connection. For a Unix
# stream socket the sender's buffer bounds what is in flight (Linux's
# unix_stream_sendmsg); a few MiB instead of the default 208 KiB let the VM
# and the client each run ahead of the other instead of taking turns. The
# kernel caps it at net.core.wmem_max.
STREAM_BUFFER = 4 << 20


class ProtocolError(ConnectionError):
    """The other side broke the protocol or went away mid-frame."""


def frame(kind: bytes, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def send_frame(sock, kind: bytes, payload: bytes) -> None:
    sock.sendall(frame(kind, payload))


def widen(sock) -> None:
    """Give a command's connection room to stream (see STREAM_BUFFER)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_BUFFER)
    except OSError:
        pass        # the default buffer works, only slower


def send_json(sock, kind: bytes, value: dict) -> None:
    send_frame(sock, kind, json.dumps(value).encode())


def recv_exact(sock, length: int) -> bytes:
    chunks, left = [], length
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ProtocolError("the connection closed mid-frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock) -> tuple[bytes, bytes]:
    """The next frame; ProtocolError if the connection ends before it."""
    first = sock.recv(HEADER.size)
    if not first:
        raise ProtocolError("the connection closed")
    header = first + recv_exact(sock, HEADER.size - len(first))
    kind, length = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"a frame of {length} bytes is too large")
    return kind, recv_exact(sock, length)


def terminal_size(rows, columns) -> tuple[int, int]:
    """A terminal's size from a client, checked (ProtocolError if it is none)."""
    if not all(type(n) is int and 0 < n <= MAX_TERMINAL_SIZE for n in (rows, columns)):
        raise ProtocolError(f"a terminal of {rows!r} x {columns!r}")
    return rows, columns


class TerminalInput:
    """The VM process's end of a terminal client's frames, as an input filter: the
    bytes of KEYS frames go on to the terminal, RESIZE frames to ``resize(rows,
    columns)``. A client that breaks the framing gets its input ignored."""

    def __init__(self, resize):
        self.resize = resize
        self.buffer = bytearray()
        self.broken = False

    def filter(self, data: bytes) -> bytes:
        if self.broken:
            return b""
        self.buffer += data
        keys = bytearray()
        while len(self.buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self.buffer)
            if length > MAX_TERMINAL_FRAME or kind not in (KEYS, RESIZE):
                self.broken = True
                self.buffer.clear()
                break
            if len(self.buffer) < HEADER.size + length:
                break
            payload = bytes(self.buffer[HEADER.size:HEADER.size + length])
            del self.buffer[:HEADER.size + length]
            if kind == KEYS:
                keys += payload
                continue
            try:
                size = decode_json(payload)
                self.resize(*terminal_size(size.get("rows"), size.get("columns")))
            except ProtocolError:
                pass            # a bad size changes nothing
        return bytes(keys)


def decode_json(payload: bytes) -> dict:
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("a frame that is not JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError("a JSON frame that is not an object")
    return value
