"""The VM's part of its network: the virtio-net card and the passt it is plugged into.

A VM with ``--network user`` or ``host`` has a virtio-net card
(devices/virtio/net.py) from its boot on, so that the guest's driver is
loaded when a snapshot is taken: clones of that snapshot (the run pool's
children, forks, restores) only plug the card into a passt of their own,
with a new MAC address, and the agent brings the interface up before the
next command (``pending_script``). The card is in the snapshot; the
passt is not, and TCP connections do not survive a snapshot.

A passt that ends while the VM runs is reported once (``error``, and a
warning in the log): the card's link goes down, and the guest's
connections fail on their own timeouts; the VM runs on.
"""

import logging

from ..devices.virtio.net import VirtioNet
from . import network
from .passt import Passt, PasstLink

log = logging.getLogger("hartvm.vmm")


class NetworkCard:
    def __init__(self, mac: bytes):
        self.device = VirtioNet(mac)
        self.mode = network.NONE          # what the card is plugged into
        self.published: tuple = ()
        self.passt = None
        self.link = None
        self.error: str | None = None
        self._script_due = False

    def plug(self, mode: str, published, mac: bytes, io) -> None:
        """Connect the card to a new passt for ``mode`` with ``published`` ports and
        give it the address ``mac``; the guest configures it before its next
        command. Raises HartvmError (a port in use, no passt) with the card unplugged."""
        self.unplug()
        network.check_mode(mode)
        if mode == network.NONE:
            return
        passt = Passt(mode, published)
        self.passt = passt
        self.link = PasstLink(passt, self.device, io, self._passt_ended)
        self.mode, self.published, self.error = mode, tuple(published), None
        self.device.connect(self.link, mac)
        self._script_due = True

    def _passt_ended(self, why: str) -> None:
        self.error = why
        log.warning("hartvm: network: %s; the guest's link is down", why)
        self.device.connect(None)

    @property
    def script_due(self) -> bool:
        return self._script_due

    def pending_script(self) -> bytes:
        """The agent's shell line that brings the interface up, once after each plug."""
        if not self._script_due:
            return b""
        self._script_due = False
        return network.guest_script(self.device.mac)

    def unplug(self) -> None:
        """End this card's passt (if it has one); the link goes down."""
        self._let_go(end_passt=True)

    def forget(self) -> None:
        """In a forked child: drop the parent's passt without ending it."""
        self._let_go(end_passt=False)

    def _let_go(self, end_passt: bool) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.passt is not None:
            if end_passt:
                self.passt.close()
            else:
                self.passt.forget()
            self.passt = None
        if self.device.link is not None:
            self.device.connect(None)
        self.mode, self.published = network.NONE, ()
