"""The guest system that hartvm boots by default: files fetched from Debian and the initramfs built from them."""
