"""``run`` feels like ``subprocess.run``, in this process (``VM``) and through a VM
process (``RemoteVM``) alike: text mode, ``check``, a timeout's partial output,
and a ``RemoteVM`` in a with block."""

import subprocess

import pytest

import hartvm
from hartvm.vmm import registry


@pytest.fixture(scope="module", params=["VM", "RemoteVM"])
def vm(request, state_dir):
    if request.param == "VM":
        with hartvm.VM(progress=False) as machine:
            yield machine
    else:
        with hartvm.VM.up(name="api", progress=False) as remote:
            yield remote


def test_text_mode_takes_and_gives_str(vm):
    result = vm.run(["sh", "-c", "cat; printf 'é\\n' >&2"], input="héllo ✓", text=True)
    assert (result.stdout, result.stderr, result.returncode) == ("héllo ✓", "é\n", 0)
    assert vm.run(["wc", "-c"], input="é", encoding="latin-1").stdout.strip() == "1"
    assert vm.run(["printf", "\\351"], encoding="latin-1").stdout == "é"
    assert vm.run(["printf", "\\377"], text=True, errors="replace").stdout == "\ufffd"
    assert vm.run(["echo", "bytes"]).stdout == b"bytes\n"          # not text: bytes


def test_text_callables_get_whole_characters(vm):
    chunks = []
    # Two writes that split "é" (c3 a9) in the middle.
    vm.run(["sh", "-c", "printf '\\303'; printf '\\251!'"], stdout=chunks.append, text=True)
    assert all(isinstance(chunk, str) for chunk in chunks)
    assert "".join(chunks) == "é!"


@pytest.mark.parametrize("text", [False, True])
def test_check_raises_an_error_with_the_output(vm, text):
    with pytest.raises(hartvm.CommandFailed) as caught:
        vm.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=True, text=text)
    error = caught.value
    assert isinstance(error, subprocess.CalledProcessError)
    assert isinstance(error, hartvm.HartvmError)
    expected = ("out\n", "err\n") if text else (b"out\n", b"err\n")
    assert (error.stdout, error.output, error.stderr) == (expected[0], expected[0], expected[1])
    assert error.returncode == 3 and error.cmd == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    assert str(error).endswith("exited with status 3: err")
    assert vm.run(["true"], check=True).returncode == 0


@pytest.mark.parametrize("text", [False, True])
def test_a_timeout_carries_the_output_so_far(vm, text):
    with pytest.raises(hartvm.CommandTimeout) as caught:
        vm.run(["sh", "-c", "echo partial; echo so-far >&2; while :; do :; done"], timeout=2,
               text=text)
    error = caught.value
    assert isinstance(error, subprocess.TimeoutExpired) and isinstance(error, hartvm.HartvmError)
    expected = ("partial\n", "so-far\n") if text else (b"partial\n", b"so-far\n")
    assert (error.stdout, error.stderr) == expected
    assert error.timeout == 2 and error.cmd[0] == "sh"
    assert "was killed" in str(error)
    assert vm.run(["echo", "alive"], text=True).stdout == "alive\n"


@pytest.mark.parametrize("call, message", [
    (lambda vm: vm.run(["cat"], input="str without text=True"), "input must be bytes"),
    (lambda vm: vm.run(["true"], encoding="no-such-codec"), "no-such-codec"),
    (lambda vm: vm.run(["true"], text=True, errors="no-such-handler"), "no-such-handler"),
    (lambda vm: vm.run(["cat"], input="\udcff", text=True), "cannot be encoded"),
    (lambda vm: vm.run(["printf", "\\377"], text=True), "is not utf-8"),
])
def test_text_mode_errors_are_hartvm_errors_and_the_vm_stays_usable(vm, call, message):
    with pytest.raises(hartvm.HartvmError, match=message):
        call(vm)
    assert vm.run(["echo", "still here"]).stdout == b"still here\n"


def test_a_result_checks_itself_like_completed_process(vm):
    result = vm.run(["false"])
    with pytest.raises(subprocess.CalledProcessError):
        result.check_returncode()


def test_a_remote_vm_in_a_with_block_is_stopped_at_its_end(state_dir):
    with hartvm.VM.up(name="scoped", progress=False) as scoped:
        assert scoped.run(["hostname"], text=True).stdout == "scoped\n"
        pid = scoped.info().pid
    assert "scoped" not in [info.name for info in hartvm.list_vms()]
    assert registry.process_start_time(pid) is None          # its process is gone
