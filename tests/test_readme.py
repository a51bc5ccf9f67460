"""The README's Python examples run as written."""

import os
import re

from conftest import ROOT


def _examples():
    with open(os.path.join(ROOT, "README.md")) as file:
        text = file.read()
    section = text[text.index("## Python API: commands in a guest"):]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_vm_example_runs():
    example = _examples()[0]
    assert "hartvm.VM" in example
    exec(compile(example, "README.md", "exec"), {})


def test_readme_snapshot_example_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HARTVM_STATE_DIR", str(tmp_path))    # its own VMs only
    example = _examples()[1]
    assert "hartvm.VM.up" in example
    exec(compile(example, "README.md", "exec"), {})
    assert not any((tmp_path / "vms").iterdir())            # every VM stopped


def test_readme_machine_example_runs(toolchain, monkeypatch, capfd):
    import build as baremetal
    baremetal.build([os.path.join(ROOT, "examples", "hello.c")],
                    os.path.join(ROOT, "build", "hello.elf"))
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Python API: the machine"):]
    example = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    monkeypatch.chdir(ROOT)
    names = {}
    exec(compile(example, "README.md", "exec"), names)
    assert b"Hello from a bare-metal" in b"".join(names["console"])
    assert names["result"].stop.name == "STOPPED"            # Linux stopped by until()
    assert b"OpenSBI" in capfd.readouterr().out.encode()     # its console on stdout


def test_readme_hooks_example_runs(capfd):
    """The hooks example on Linux: each process's system calls, a kernel function's callers."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("### Hooks"):]
    example = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    names = {}
    exec(compile(example, "README.md", "exec"), names)
    tasks = names["syscalls"].values()
    # PID 1, the shell: forked mount and grep (clone) and waited for them (wait4).
    assert any(calls[220] >= 2 and calls[260] >= 2 for calls in tasks), names["syscalls"]
    # grep: executed by the forked shell (execve) and reading /proc/kallsyms.
    assert any(calls[221] >= 1 and calls[63] >= 10 for calls in tasks), names["syscalls"]
    assert names["result"].stop.name == "HOOK"
    callers = names["callers"]
    assert len(callers) == 20 and all(address >= 0xffffffff80000000 for address in callers)
    assert names["up_read"] >= 0xffffffff80000000
    assert "Stop.HOOK" in capfd.readouterr().out
