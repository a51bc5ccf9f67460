"""MMIO devices, one per file."""
