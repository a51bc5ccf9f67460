"""Virtio 1.2 devices over the MMIO transport (``mmio.py``) with split virtqueues."""
