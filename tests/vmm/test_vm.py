"""``hartvm.VM``: commands in a booted Debian guest through the guest agent.

One guest serves most tests, one command after another, as a user would use
it; tests that end their guest (panic) start their own.
"""

import hashlib
import os

import pytest

import hartvm
from conftest import smaps_overlapping


@pytest.fixture(scope="module")
def vm():
    with hartvm.VM(memory="256M", progress=False) as machine:
        yield machine


def test_stdout_and_stderr_are_separate_and_the_status_comes_back(vm):
    result = vm.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.stdout, result.stderr, result.returncode) == (b"out\n", b"err\n", 7)


@pytest.mark.parametrize("command, status", [
    (["true"], 0), (["false"], 1), (["sh", "-c", "exit 7"], 7),
    (["no-such-command"], 127), (["/no/such/file"], 127), (["/etc/passwd"], 126),
    (["sh", "-c", "kill -9 $$"], 128 + 9),
])
def test_exit_statuses(vm, command, status):
    assert vm.run(command).returncode == status


def test_missing_command_says_so(vm):
    result = vm.run(["no-such-command", "arg"])
    assert b"no-such-command: command not found" in result.stderr


def test_a_string_runs_in_sh(vm):
    assert vm.run("echo $((6 * 7))").stdout == b"42\n"


def test_arguments_reach_the_command_unchanged(vm):
    args = ["it's", "two words", "$HOME", "*", "new\nline", "", "\\"]
    result = vm.run(["sh", "-c", 'for a in "$@"; do printf "[%s]" "$a"; done', "sh", *args])
    assert result.stdout.decode() == "".join(f"[{a}]" for a in args)


def test_one_mebibyte_of_binary_data_through_stdin_and_back(vm):
    data = os.urandom(1 << 20)
    result = vm.run(["cat"], input=data)
    assert result.returncode == 0
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


def test_binary_output_on_both_streams(vm):
    data = bytes(range(256)) * 64
    result = vm.run(["sh", "-c", "cat; cat /tmp/nothing-here 2>/dev/null; printf '\\000\\377' >&2"],
                    input=data)
    assert result.stdout == data and result.stderr == b"\x00\xff"


def test_stdin_ends_for_a_command_that_reads_it(vm):
    assert vm.run(["wc", "-c"], input=b"12345").stdout.strip() == b"5"
    assert vm.run(["wc", "-c"]).stdout.strip() == b"0"     # empty stdin: end of file at once


def test_environment_and_working_directory(vm):
    result = vm.run(["sh", "-c", 'echo "$GREETING/$OTHER"; pwd'], env={"GREETING": "hi there",
                                                                      "OTHER": "a'b"},
                    cwd="/proc")
    assert result.stdout == b"hi there/a'b\n/proc\n"
    assert b"PATH=" in vm.run(["env"]).stdout               # the guest's own variables stay


def test_missing_working_directory_fails_the_command(vm):
    result = vm.run(["pwd"], cwd="/no/such/dir")
    assert result.returncode == 126 and b"/no/such/dir" in result.stderr


def test_bad_environment_name_is_refused(vm):
    with pytest.raises(hartvm.HartvmError, match="environment variable"):
        vm.run(["true"], env={"1BAD": "x"})


def test_output_is_streamed_to_callables(vm):
    out, err = [], []
    result = vm.run(["sh", "-c", "echo a; echo b >&2; echo c"], stdout=out.append,
                    stderr=err.append)
    assert b"".join(out) == b"a\nc\n" and b"".join(err) == b"b\n"
    assert result.stdout == b"" and result.returncode == 0


def test_files_copy_in_and_out_intact(vm, tmp_path):
    data = os.urandom(300_000)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    vm.put_file(str(source), "/tmp/copied.bin", mode=0o600)
    guest_sum = vm.run(["sha256sum", "/tmp/copied.bin"]).stdout.split()[0].decode()
    assert guest_sum == hashlib.sha256(data).hexdigest()
    assert vm.run(["stat", "-c", "%a %s", "/tmp/copied.bin"]).stdout == b"600 300000\n"
    vm.run(["sh", "-c", "head -c 1000 /tmp/copied.bin | tac > /tmp/changed.bin"])
    back = tmp_path / "out.bin"
    content = vm.get_file("/tmp/changed.bin", str(back))
    assert back.read_bytes() == content
    assert hashlib.sha256(content).hexdigest() == \
        vm.run(["sha256sum", "/tmp/changed.bin"]).stdout.split()[0].decode()


def test_file_errors_are_exceptions(vm):
    with pytest.raises(hartvm.HartvmError, match="cannot read /no/such/file"):
        vm.get_file("/no/such/file")
    with pytest.raises(hartvm.HartvmError, match="cannot write /no/such/dir/f"):
        vm.put_file(b"x", "/no/such/dir/f")
    with pytest.raises(hartvm.HartvmError, match="missing-host-file"):
        vm.put_file("/tmp/missing-host-file", "/tmp/x")


def test_guest_identity(vm):
    assert vm.run(["hostname"]).stdout == b"hartvm\n"
    assert vm.run(["uname", "-m"]).stdout == b"riscv64\n"
    assert b"virtio_rng" in vm.run(["cat", "/sys/class/misc/hw_random/rng_current"]).stdout
    # The device tree's rng-seed makes the kernel's random pool ready at once.
    assert b"[    0.000000] random: crng init done" in vm.run(["dmesg"]).stdout


def test_check_raises_on_failure(vm):
    with pytest.raises(hartvm.HartvmError, match="status 3"):
        vm.run(["sh", "-c", "exit 3"], check=True)


def test_disks_read_write_and_read_only(tmp_path):
    disk, frozen = tmp_path / "disk.img", tmp_path / "frozen.img"
    disk.write_bytes(bytes(8 << 20))
    frozen.write_bytes(b"FROZEN" + bytes((1 << 20) - 6))
    with hartvm.VM(drives=[str(disk), f"{frozen},readonly"], progress=False) as vm:
        raw = vm.run("echo raw-block-write | dd of=/dev/vda bs=512 seek=3 2>/dev/null && sync")
        assert raw.returncode == 0, raw.stderr
        assert disk.read_bytes()[3 * 512:3 * 512 + 15] == b"raw-block-write"
        fs = vm.run("mke2fs /dev/vda >/dev/null && mount /dev/vda /mnt && echo kept > /mnt/file "
                    "&& sync && umount /mnt && mount -o ro /dev/vda /mnt && cat /mnt/file")
        assert (fs.returncode, fs.stdout) == (0, b"kept\n"), fs.stderr
        assert vm.run(["head", "-c", "6", "/dev/vdb"]).stdout == b"FROZEN"
        refused = vm.run("echo x | dd of=/dev/vdb conv=fsync 2>&1")
        assert refused.returncode != 0, refused.stdout
        disk_fds = [d.backend.fd for d in vm.machine.board.virtio.values() if hasattr(d.backend, "fd")]
    assert frozen.read_bytes()[:6] == b"FROZEN"
    assert len(disk_fds) == 2 and vm.machine is None        # closing released the machine
    for fd in disk_fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_timeout_kills_the_command_and_the_vm_runs_on(vm):
    with pytest.raises(hartvm.CommandTimeout, match="timed out after 2 s and was killed"):
        vm.run(["sh", "-c", "echo $$ > /tmp/looping; while :; do :; done"], timeout=2)
    pid = vm.run(["cat", "/tmp/looping"]).stdout.strip()
    assert vm.run(["kill", "-0", pid]).returncode == 1        # it is gone
    assert vm.run(["echo", "still here"]).stdout == b"still here\n"


def test_commands_keep_the_default_signal_actions(vm):
    """The agent runs commands in its foreground: SIGINT and SIGQUIT are not ignored."""
    result = vm.run(["sh", "-c", "grep SigIgn /proc/self/status; kill -INT $$; echo survived"])
    assert result.returncode == 128 + 2, result
    ignored = int(result.stdout.split()[1], 16)
    assert not ignored & (1 << 1 | 1 << 2)      # bits of signals 2 and 3


def test_a_kernel_panic_is_reported_with_the_console():
    with hartvm.VM(progress=False) as vm:
        with pytest.raises(hartvm.GuestError) as error:
            vm.run("echo c > /proc/sysrq-trigger")
    message = str(error.value)
    assert "the guest kernel panicked" in message and "last console lines" in message
    assert "sysrq" in message.lower() or "Kernel panic" in message


@pytest.mark.parametrize("boot", [True, False], ids=["booted", "restored"])
def test_fixed_clock_and_seed_make_runs_reproducible(boot):
    """Same epoch, same seed, same commands: same output and instruction counts,
    whether the guest boots or is restored from the cached booted snapshot."""
    def session():
        with hartvm.VM(progress=False, epoch_ns=1_800_000_000 * 10**9,
                       rng_seed=b"reproducible seed", boot=boot) as vm:
            started = vm.machine.instructions
            result = vm.run("date +%s; head -c 16 /dev/urandom | od -An -tx1; cat /proc/uptime")
            return started, result.instructions, result.stdout
    first, second = session(), session()
    assert first == second
    assert first[2].startswith(b"1800000")          # the clock started at the given epoch


@pytest.mark.parametrize("hostname", ["two words", "", "x" * 65, "a\nb"])
def test_bad_hostname_is_refused_before_booting(hostname):
    with pytest.raises(hartvm.HartvmError, match="bad hostname"):
        hartvm.VM(hostname=hostname, progress=False)


def test_guest_memory_beyond_the_hosts_free_memory_works_if_untouched():
    """Overcommit: the RAM mapping reserves nothing, pages cost only once touched."""
    available = next(int(line.split()[1]) << 10 for line in open("/proc/meminfo")
                     if line.startswith("MemAvailable:"))
    size = (available + (4 << 30)) >> 30 << 30
    with hartvm.VM(memory=size, progress=False, boot=True) as vm:
        total_kib = int(vm.run(["sh", "-c", "grep MemTotal /proc/meminfo"]).stdout.split()[1])
        resident = _resident_bytes_of_mapping(vm.machine.ram.m8.ctypes.data, size)
    assert total_kib << 10 > available           # the guest has more than the host has free
    assert resident < 2 << 30                    # and the host paid for what it touched only


def _resident_bytes_of_mapping(start: int, size: int) -> int:
    """Resident bytes of the mappings that overlap [start, start + size) (the kernel
    may have merged guest RAM with a neighbouring mapping: an upper bound)."""
    return sum(int(entry["Rss"].split()[0]) << 10 for entry in smaps_overlapping(start, size))


@pytest.mark.parametrize("call", [
    lambda vm: vm.run("true", timeout="5"),
    lambda vm: vm.run("true", timeout=-1),
    lambda vm: vm.run("true", timeout=float("nan")),
    lambda vm: vm.run("cat", input="text, not bytes"),
    lambda vm: vm.run("true", stdout=5),
    lambda vm: vm.run("true", stdin_fd="0"),
    lambda vm: vm.run("true", env={"A": None}),
    lambda vm: vm.run("true", env=[("A", "1")]),
    lambda vm: vm.run(["echo", 5]),
    lambda vm: vm.run("true", cwd=7),
    lambda vm: vm.put_file(123, "/tmp/x"),
    lambda vm: vm.put_file(b"x", "/tmp/x", mode="644"),
])
def test_bad_arguments_are_refused_and_the_vm_stays_usable(vm, call):
    with pytest.raises(hartvm.HartvmError):
        call(vm)
    assert vm.run(["echo", "still here"]).stdout == b"still here\n"


@pytest.mark.parametrize("options", [{"epoch_ns": -1}, {"epoch_ns": "now"},
                                     {"rng_seed": "seed"}])
def test_bad_clock_or_seed_is_refused_before_starting(options):
    with pytest.raises(hartvm.HartvmError):
        hartvm.VM(progress=False, **options)


def test_clones_hand_out_process_ids_of_their_own(vm):
    """User space seeds from pids ($RANDOM in busybox's sh): clones must not share them."""
    clones = vm.fork(3)
    try:
        pids = [clone.run(["sh", "-c", "echo $$"], check=True).stdout for clone in clones]
        randoms = [clone.run(["sh", "-c", "echo $RANDOM"], check=True).stdout
                   for clone in clones]
    finally:
        for clone in clones:
            clone.close()
    assert len(set(pids)) == 3 and len(set(randoms)) == 3, (pids, randoms)


@pytest.mark.parametrize("flood", [
    "while :; do sleep 1000 & done",                  # a process flood
    "bomb() { bomb | bomb & }; bomb; while :; do wait; done",    # a fork bomb
])
def test_a_command_that_floods_processes_is_killed_and_the_vm_runs_on(vm, flood):
    with pytest.raises(hartvm.CommandTimeout, match="was killed"):
        vm.run(["sh", "-c", flood], timeout=3)
    assert vm.run(["echo", "alive"]).stdout == b"alive\n"
    left = vm.run(["sh", "-c", "n=0; for group in command0 command1 background; do "
                   "while read -r p; do n=$((n + 1)); done </sys/fs/cgroup/$group/cgroup.procs; "
                   "done; echo $n"]).stdout
    assert left == b"1\n"                            # only that very command


def test_background_processes_run_on_and_a_later_kill_spares_them(vm):
    vm.run(["sh", "-c", "sleep 1000 & echo $! > /tmp/background"], check=True)
    pid = vm.get_file("/tmp/background").strip().decode()
    with pytest.raises(hartvm.CommandTimeout):
        vm.run(["sh", "-c", "while :; do :; done"], timeout=1)
    assert vm.run(["kill", "-0", pid]).returncode == 0     # still there
    vm.run(["kill", pid], check=True)


def test_what_a_command_leaves_running_never_writes_into_a_later_command(vm):
    """A background process keeps its command's output channel; what it writes
    later is dropped, not mixed into the next command's output (issue 16, 7)."""
    vm.run(["sh", "-c", "(sleep 1; echo LEAK; echo LEAK >&2) &"], check=True)
    later = vm.run(["sh", "-c", "sleep 3; echo mine; echo theirs >&2"])
    assert (later.stdout, later.stderr) == (b"mine\n", b"theirs\n")


def test_with_every_output_channel_held_a_command_still_runs_and_says_so():
    from hartvm.guest.agent import HELD_MESSAGE, OUTPUT_CHANNELS
    with hartvm.VM(progress=False) as fresh:
        for _ in range(OUTPUT_CHANNELS):
            fresh.run(["sh", "-c", "sleep 1000 &"], check=True)
        lost = fresh.run(["sh", "-c", "echo lost; killall sleep"])
        assert lost.returncode == 0
        assert (lost.stdout, lost.stderr) == (b"", HELD_MESSAGE)
        assert fresh.run(["echo", "back"]).stdout == b"back\n"
