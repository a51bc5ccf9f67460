"""Nothing written is lost: what a VM does with its drives before it ends.

When a VM is closed (the end of ``hartvm run``, ``hartvm stop``,
``VM.close()``), the guest still holds writes in its page cache and, for a
mounted ext4, a journal that would need recovery. So, through the agent,
the guest first ends what still runs (a command that was interrupted, what
commands left in the background, which could keep a filesystem busy),
``sync``s, and unmounts every filesystem mounted from a virtio disk (the
last mounted first; one that cannot be unmounted is remounted read-only).
Every write then has reached the host file through virtio-blk, whose FLUSH
is an ``fsync``; the host ``fsync``s the drive files once more at the end
(``Block.sync``), so that a guest that could not flush still leaves what it
wrote durable.

A guest may be hung or hostile: the flush runs within a budget of
instructions per hart, with idle time skipped (``realtime`` off, so a guest
that waits for nothing ends the run at once instead of sleeping), and is
given up when the budget is spent. The VM is ending either way.
"""

from ..guest.command import command_script

# About 5 s of guest time per hart at hartvm's speed: a sync of a large dirty
# page cache fits, a guest that spins is given up within seconds.
FLUSH_BUDGET = 1_000_000_000
KILL_REPEAT = 20_000_000        # instructions between kill requests for a running command
# The guest's side, with builtins where it can (every process costs millions
# of instructions). /proc/mounts escapes a space in a mount point as \040:
# printf %b undoes that.
FLUSH_SCRIPT = r"""
background=/sys/fs/cgroup/background
if [ -e $background/cgroup.kill ]; then
    echo 1 > $background/cgroup.kill
    rounds=0
    while read -r populated < $background/cgroup.events && [ "$populated" != "populated 0" ] &&
            [ $rounds -lt 100 ]; do
        sleep 0.01
        rounds=$((rounds + 1))
    done
fi
sync
set -f
mounts=
while read -r device point rest; do
    case $device in /dev/vd*) mounts="$point $mounts";; esac
done < /proc/mounts
for point in $mounts; do
    case $point in *\\*) point=$(printf %b "$point");; esac
    umount "$point" 2>/dev/null || mount -o remount,ro "$point" 2>/dev/null
done
sync
"""


class Chores:
    """Commands the host itself runs in the guest (a flush, a write-back), within
    a budget of guest instructions per hart: a guest that is hung, or hostile,
    is given up when the budget is spent, never waited for."""

    def __init__(self, vm, budget_per_hart: int):
        self.vm, self.machine, self.agent = vm, vm.machine, vm.agent
        self.budget = budget_per_hart * len(self.machine.harts)
        self.started = self.machine.instructions

    def left(self) -> int:
        return max(0, self.budget - (self.machine.instructions - self.started))

    def broken(self) -> bool:
        return self.vm.log.panicked or self.agent.error is not None

    def end_command(self, enough=lambda: False) -> None:
        """Kill the command that still runs (the VM was stopped, or its run
        interrupted, in the middle of it), and ask again if the kill came before
        it started, until it has ended or ``enough()``."""
        if not self.agent.busy:
            return
        next_kill = self.machine.instructions

        def ended() -> bool:
            nonlocal next_kill
            if self.machine.instructions >= next_kill:
                self.agent.kill()
                next_kill = self.machine.instructions + KILL_REPEAT
            return not self.agent.busy or self.broken() or enough()

        self.machine.run(until=ended, max_instructions=self.left())

    def run(self, argv) -> bool:
        """Run ``argv``, its output (the guest's chatter) dropped; True if it
        exited with status 0 within the budget."""
        if self.agent.busy or self.broken() or not self.left():
            return False
        discard = lambda data: None   # noqa: E731
        self.agent.start(command_script(argv), discard, discard)
        self.machine.run(until=lambda: self.agent.status is not None or self.broken(),
                         max_instructions=self.left())
        return self.agent.status == 0 and not self.broken()


def flush_guest(vm) -> bool:
    """Have the guest of ``vm`` (a running ``VM`` whose agent is ready) end what runs,
    sync and unmount its disks; True once it has, False if it did not within
    the budget (or failed)."""
    vm.io.realtime = False
    chores = Chores(vm, FLUSH_BUDGET)
    chores.end_command()
    return chores.run(["sh", "-c", FLUSH_SCRIPT])
