"""A read-only memory region (the boot ROM): reads return its bytes, writes are ignored."""

import numpy as np

from .base import Device, saved


class ROM(Device):
    def __init__(self, size: int, content: bytes = b""):
        super().__init__()
        if len(content) > size:
            raise ValueError(f"ROM content of {len(content)} bytes does not fit in {size}")
        self.data = np.zeros(size, np.uint8)
        self.data[:len(content)] = np.frombuffer(content, np.uint8)
        self.halfwords = self.data.view(np.int16)  # the hart fetches code from here

    def read(self, offset, size):
        return int.from_bytes(self.data[offset:offset + size].tobytes(), "little")

    def write(self, offset, size, value):
        pass

    def save(self):
        return {"data": self.data.tobytes()}

    def restore(self, state):
        data = saved(state, "data", bytes)
        if len(data) != len(self.data):
            raise ValueError(f"ROM of {len(data)} bytes, expected {len(self.data)}")
        self.data[:] = np.frombuffer(data, np.uint8)
