"""Generated hostile input for the command line: every subcommand's typed
options with malformed values, every path option with files that are no
files, every VM name slot with names that are no names. Each case must end
in a non-zero status with one ``hartvm:`` line last on stderr, within a
time bound, never a traceback or a hang."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT, build_c
from hartvm.frontends.cli import build_parser

# Malformed for each kind of typed option (a huge count of instructions is a
# valid one; a huge memory size is not).
BAD_VALUES = {
    "_memory": ["", "abc", "-1", "0", "3K", "9" * 30],
    "_positive": ["", "abc", "-1", "0", "1.5"],
    "_seconds": ["", "abc", "-1", "0", "nan", "inf"],
    "_port": ["", "abc", "-1", "65536", "1.5", "9" * 30],
    "_volume": ["", "/nonexistent:/data", "/etc/passwd:/data", "/tmp", "/tmp:data",
                "/tmp:/data:rx", "/tmp:/", "/tmp:/data:ro:x"],
    "_image_name": ["", "Debian", "../x", "a/b", "x" * 100, "no-such-image"],
    "_disk_size": ["", "abc", "0", "-1G", "3K", "9" * 30],
    "_published": ["", "80", "a:80", "0:80", "70000:80", "8080:80/sctp", "1.2.3:80:80",
                   "[::1]:80", "8080:80:90"],
    "_listen": ["", "8000", "abc", ":8000", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536",
                "127.0.0.1:-1", "localhost:8000", "::1:8000", "[::1]", "1.2.3.4.5:80"],
}
BAD_PATHS = ["/dev/zero", "FIFO", "DIRECTORY", "/nonexistent/file", "EMPTY"]
BAD_NAMES = ["", "../escape", "Upper Case", "x" * 100]
PATH_OPTIONS = {"--kernel", "--bios", "--initrd", "--drive", "--from", "--replay"}
# What each subcommand needs besides the option under test, so that only that
# option is wrong (KERNEL is a valid bare-metal ELF, built by the test setup).
CONTEXT = {
    "boot": ["--bios", "none", "--kernel", "KERNEL"],
    "run": [], "shell": [], "up": [], "exec": ["no-such-vm"], "fork": ["no-such-vm"],
}
TAIL = {"run": ["--", "true"], "exec": ["--", "true"]}


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def _cases():
    commands = list(_subparsers().items())
    # Subcommands of subcommands whose options are typed (fleet run's volumes
    # are the nodes' paths, checked there).
    fleet = next(a for a in _subparsers()["fleet"]._actions
                 if a.__class__.__name__ == "_SubParsersAction")
    commands.append(("fleet run", fleet.choices["run"]))
    for command, sub in commands:
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0 or action.dest == "help":
                continue
            option = action.option_strings[0]
            if action.type is not None:
                values = BAD_VALUES[action.type.__name__]
            elif option in PATH_OPTIONS:
                values = BAD_PATHS
            elif action.choices is not None:
                values = ["", "NONE", "no-such-choice"]
            else:
                continue
            for value in values:
                context = [c for c in CONTEXT.get(command, [])]
                if command == "boot" and option in ("--kernel", "--bios"):
                    context = ["--kernel", "KERNEL"] if option == "--bios" else ["--bios", "none"]
                yield pytest.param([*command.split(), *context, option, value,
                                    *TAIL.get(command, [])],
                                   id=f"{command} {option} {value[:12]!r}")
    for command in ("exec", "snapshot", "fork", "stop", "logs"):
        for name in BAD_NAMES:
            args = [command, name] + (["/tmp/x"] if command == "snapshot" else []) + \
                TAIL.get(command, [])
            yield pytest.param(args, id=f"{command} name {name[:12]!r}")
    for path in BAD_PATHS:
        yield pytest.param(["restore", path], id=f"restore {path!r}")
    # cp: a host source that is no file (checked before the VM is asked), names
    # that are no VM's, and sides that are both or neither a VM's path.
    for path in BAD_PATHS:
        yield pytest.param(["cp", path, "no-such-vm:/tmp/x"], id=f"cp from {path!r}")
    for name in BAD_NAMES:
        yield pytest.param(["cp", f"{name}:/etc/passwd", "/tmp/x"], id=f"cp name {name[:12]!r}")
    for args in (["host-a", "host-b"], ["no-such-vm:/a", "no-such-vm:/b"],
                 ["no-such-vm:/a", "/tmp/b"], ["no-such-vm:", "/tmp/b"],
                 ["no-such-vm:/a", "/nonexistent/dir/b"], ["only-one"], []):
        yield pytest.param(["cp", *args], id=f"cp {' '.join(args)!r}")


CASES = list(_cases())


@pytest.fixture(scope="module")
def files(tmp_path_factory, toolchain):
    directory = tmp_path_factory.mktemp("hostile")
    os.mkfifo(directory / "fifo")
    (directory / "empty").write_bytes(b"")
    return {"FIFO": str(directory / "fifo"), "DIRECTORY": str(directory),
            "EMPTY": str(directory / "empty"), "KERNEL": build_c("printf")}


def test_the_suite_covers_every_subcommand_with_options():
    commands = {case.values[0][0] for case in CASES}
    assert commands >= {"boot", "run", "shell", "up", "exec", "fork", "snapshot", "stop",
                        "restore", "cp", "serve"}
    assert len(CASES) >= 100


@pytest.mark.parametrize("args", CASES)
def test_malformed_input_is_one_line_and_a_failure(args, files):
    args = [files.get(word, word) for word in args]
    try:
        result = subprocess.run([sys.executable, "-m", "hartvm", *args], capture_output=True,
                                text=True, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hartvm {args} hung")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, (args, result.stdout)
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and lines[-1].startswith("hartvm:"), result.stderr
    assert sum(line.startswith("hartvm:") for line in lines) == 1, result.stderr
