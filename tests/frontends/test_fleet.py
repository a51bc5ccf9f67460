"""Fleets on a real Ray cluster: a head and a second node started with ``ray
start`` on this machine, each with a temporary directory of its own.

The nodes are told apart by a custom resource each (``hartvm_node_a``,
``hartvm_node_b``); every process of a node (its raylet, its workers, the
run pools its actor starts) inherits a marker variable from its ``ray
start``, which is how a node is killed as a whole, as a machine that dies
would be, and how the cluster is torn down without touching other Ray
processes. Both nodes share one ``$HARTVM_STATE_DIR``: each actor must keep
its run pools apart in a directory of its own.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT

MARKER = "HARTVM_FLEET_TEST_NODE"
NODES = ("hartvm_node_a", "hartvm_node_b")


def _marked(value: str) -> list[int]:
    """The pids of the processes whose environment has MARKER=value."""
    entry = f"{MARKER}={value}".encode()
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as environ:
                    if entry in environ.read().split(b"\0"):
                        pids.append(int(name))
            except OSError:
                pass                  # gone, or not ours
    return pids


def _kill_node(value: str) -> None:
    for pid in _marked(value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    def __init__(self, directory: str, address: str):
        self.directory, self.address = directory, address
        self.state = os.path.join(directory, "state")

    def node_names(self) -> dict[str, str]:
        """Ray node id -> its custom resource's name (with Ray initialized)."""
        import ray
        return {node["NodeID"]: name for node in ray.nodes()
                for name in NODES if name in node["Resources"]}


@pytest.fixture(scope="module")
def cluster():
    # Short: Ray's unix sockets live under it (107 bytes at most).
    directory = tempfile.mkdtemp(prefix="hvf-", dir="/tmp")
    port = _free_port()
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    base = {**os.environ, "PYTHONPATH": ROOT,      # the workers import this tree's hartvm
            "HARTVM_STATE_DIR": os.path.join(directory, "state")}
    common = ["--num-cpus", "1", "--disable-usage-stats", "--object-store-memory", "200000000"]
    try:
        for name, where in ((NODES[0], ["--head", "--port", str(port),
                                        "--include-dashboard", "false"]),
                            (NODES[1], ["--address", f"127.0.0.1:{port}"])):
            subprocess.run(
                [ray_cli, "start", *where, "--temp-dir", os.path.join(directory, name[-1]),
                 "--resources", json.dumps({name: 1}), *common],
                check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120,
                env={**base, MARKER: f"{directory}:{name}"})
        yield Cluster(directory, f"127.0.0.1:{port}")
    finally:
        for name in NODES:
            _kill_node(f"{directory}:{name}")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.fleet
def test_results_in_order_from_both_nodes(cluster):
    from hartvm import fleet
    commands = [f"echo out {i}; echo err {i} >&2; exit {i % 3}" for i in range(12)]
    seen = []
    with fleet.Fleet(cluster.address) as pool:
        names = cluster.node_names()
        results = pool.map(commands, progress=seen.append)
        # One state directory per actor, each with its own run pool.
        actors = os.listdir(os.path.join(cluster.state, "fleet"))
        assert len(actors) == 2
        for actor in actors:
            assert os.listdir(os.path.join(cluster.state, "fleet", actor, "vms")) == \
                ["run-pool-256m-1"]
    assert [(r.index, r.command, r.returncode, r.stdout, r.stderr, r.attempts)
            for r in results] == \
        [(i, commands[i], i % 3, f"out {i}\n".encode(), f"err {i}\n".encode(), 1)
         for i in range(12)]
    assert {names[r.node] for r in results} == set(NODES)      # spread over both
    assert sorted(r.index for r in seen) == list(range(12))     # progress: each once
    assert os.listdir(os.path.join(cluster.state, "fleet")) == []    # pools stopped


@pytest.mark.fleet
def test_cli_prints_each_output_in_order(cluster):
    lines = "echo one\n\nsh -c 'echo two >&2; exit 3'\necho three\nexit 4\n"
    done = subprocess.run([sys.executable, "-m", "hartvm", "fleet", "run", "--address",
                           cluster.address], input=lines.encode(), capture_output=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.stdout == b"one\nthree\n"
    assert done.stderr == b"two\n", done.stderr
    assert done.returncode == 2           # two commands failed


@pytest.mark.fleet
def test_readme_fleet_example_runs(cluster, monkeypatch, capsys):
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Fleets: many commands on a Ray cluster"):]
    example = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert sorted(printed[:20]) == sorted(f"done {n}" for n in range(20))
    assert printed[20].startswith("0 0 b'riscv64\\n' b'' ") and printed[20].endswith(" 1")
    assert printed[21].startswith("1 1 b'' ") and "No such file" in printed[21]


@pytest.mark.fleet
def test_a_node_killed_mid_run(cluster):
    """Node b dies (all its processes killed) while it holds commands: they run
    again on node a, and every command is reported once, correctly."""
    from hartvm import fleet
    count = 30
    commands = [f"echo {i}" for i in range(count)]
    seen, killed = [], []
    with fleet.Fleet(cluster.address) as pool:
        names = cluster.node_names()

        def progress(result):
            seen.append(result.index)
            if names[result.node] == NODES[1] and not killed:
                _kill_node(f"{cluster.directory}:{NODES[1]}")
                killed.append(len(seen))

        started = time.monotonic()
        results = pool.map(commands, progress=progress)
        elapsed = time.monotonic() - started
    assert killed and killed[0] < count, "node b never ran a command"
    assert sorted(seen) == list(range(count))                  # each reported once
    assert [(r.index, r.stdout, r.returncode) for r in results] == \
        [(i, f"{i}\n".encode(), 0) for i in range(count)]
    retried = [r for r in results if r.attempts > 1]
    assert retried, "node b held nothing when it died"
    assert all(names[r.node] == NODES[0] for r in retried)
    assert elapsed < 90


def test_cli_errors_are_one_line(tmp_path):
    fake = tmp_path / "ray"                     # a Python where Ray is not installed
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    for env, address, expected in (
            ({"PYTHONPATH": f"{tmp_path}:{ROOT}"}, "127.0.0.1:1", b"hartvm: fleets need Ray"),
            ({"PYTHONPATH": ROOT}, f"127.0.0.1:{_free_port()}",
             b"hartvm: cannot reach the Ray cluster at 127.0.0.1:"),
            ({"PYTHONPATH": ROOT}, "", b"hartvm: give the cluster's address")):
        done = subprocess.run([sys.executable, "-m", "hartvm", "fleet", "run", "--address",
                               address], input=b"true\n", capture_output=True, timeout=60,
                              env={**os.environ, **env})
        assert done.returncode == 125, done.stderr
        assert done.stderr.startswith(expected) and done.stderr.count(b"\n") == 1, done.stderr
