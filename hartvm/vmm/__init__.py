"""The hypervisor layer: virtual machines running the default guest, driven through its agent."""
