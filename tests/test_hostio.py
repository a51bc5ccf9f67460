"""HostIO's inputs: how much a poll moves from a host descriptor to its device.

A guest reading a stream drains a virtio-console's receive queue within a
round, so a poll reads on while input is ready, up to the device's backlog
limit; a device that holds that much already is not given more; end of
input is reported once.
"""

import os

from hartvm import hostio


def file_input(tmp_path, size):
    path = tmp_path / "input"
    path.write_bytes(os.urandom(size))
    return path.read_bytes(), os.open(path, os.O_RDONLY)


def test_a_poll_reads_on_up_to_the_backlog_limit_then_leaves_the_input_alone(tmp_path):
    content, fd = file_input(tmp_path, 3 * hostio.MAX_PENDING_INPUT)
    received, ended = bytearray(), []
    io = hostio.HostIO(output=lambda data: None)
    io.add_input(fd, received.extend, lambda: len(received), lambda: ended.append(True))
    assert io.poll()
    assert hostio.READ_SIZE < len(received) <= hostio.MAX_PENDING_INPUT + hostio.READ_SIZE
    moved = len(received)
    io.poll()                                   # the device holds too much: nothing read
    assert len(received) == moved


def test_input_is_moved_whole_and_its_end_reported_once(tmp_path):
    content, fd = file_input(tmp_path, 3 * hostio.MAX_PENDING_INPUT + 12345)
    delivered, backlog, ended = bytearray(), [0], []

    def deliver(data):
        delivered.extend(data)
        backlog[0] += len(data)

    io = hostio.HostIO(output=lambda data: None)
    io.add_input(fd, deliver, lambda: backlog[0], lambda: ended.append(True))
    for _ in range(100):
        if not io.inputs:
            break
        io.poll()
        backlog[0] = 0                          # the guest took it all
    assert bytes(delivered) == content and ended == [True] and not io.inputs
    os.close(fd)


def test_a_filter_that_keeps_the_backlog_empty_cannot_make_a_poll_endless(tmp_path):
    content, fd = file_input(tmp_path, 8 * hostio.MAX_PENDING_INPUT)
    io = hostio.HostIO(output=lambda data: None)
    io.add_input(fd, lambda data: None, lambda: 0, filter=lambda data: b"")
    io.poll()
    assert os.lseek(fd, 0, os.SEEK_CUR) <= hostio.MAX_PENDING_INPUT
    os.close(fd)
