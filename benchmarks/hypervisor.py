"""`make bench`, hypervisor part: restores, the run pool, forks and their memory.

- ``hartvm run -- true`` end to end, median of many runs: through the run
  pool (the default), and in one process restoring the cached snapshot
  (``HARTVM_POOL=0``). QEMU's figure to compare with is its boot to /init,
  what it needs to give a command a fresh VM (measured by run.py).
- Restore latency against guest RAM size: ``VM.restore`` of a booted
  snapshot, and restore until the guest has answered ``true``.
- ``hartvm fork NAME --count 10``: until all ten clones have answered a
  command, and the host memory each idle clone uses alone.
- ``hartvm serve``: ``true`` POSTed to a running VM until its exit status
  has come, against ``hartvm exec NAME -- true`` on the same VM (medians).
- The browser console of ``hartvm serve``: keystroke to echo in the page,
  timed by the page's script in Debian's headless Chromium (the console's
  test helpers, tests/frontends/browser.py).
- ``hartvm.fleet``: 200 ``true`` through a Ray cluster of two nodes started
  on this machine (one CPU each), in commands per second, against the same
  200 as ``hartvm run -- true`` one after another, as a shell loop runs them.

Uses a private state directory, and stops every VM it started.
"""

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = 21
KEYSTROKES = 30
FLEET_COMMANDS = 200
SIZES = (128 << 20, 256 << 20, 1 << 30)   # Debian's kernel does not boot in 64 MiB


def run_true_latency(runs: int = RUNS, pool: bool = True, image: str = "busybox",
                     argv=("true",)) -> tuple[float, float]:
    """(median, 90th percentile) seconds of ``hartvm run --image IMAGE -- ARGV``."""
    env = {**os.environ, "HARTVM_POOL": "1" if pool else "0"}
    command = [sys.executable, "-m", "hartvm", "run", "--image", image, "--", *argv]
    subprocess.run(command, check=True, capture_output=True, env=env)   # warm every cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env,
                       stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]


def restore_latency(size: int, runs: int = 5) -> tuple[float, float, int]:
    """(restore s, restore + ``true`` s, snapshot's RAM data bytes), medians."""
    import hartvm
    from hartvm.vmm.vm import booted_snapshot

    path = booted_snapshot(size, 1, progress=False)
    restores, answers = [], []
    for _ in range(runs):
        started = time.perf_counter()
        vm = hartvm.VM.restore(path)
        restored = time.perf_counter()
        vm.run(["true"], check=True)
        answered = time.perf_counter()
        vm.close()
        restores.append(restored - started)
        answers.append(answered - started)
    data = os.stat(path / "memory").st_blocks * 512
    return statistics.median(restores), statistics.median(answers), data


def fork_ten() -> tuple[float, float, list[int]]:
    """(fork s, fork until all ten answered s, private bytes of each idle clone)."""
    import hartvm
    from hartvm.vmm import registry

    parent = hartvm.VM.up(name="bench", progress=False)
    try:
        parent.run(["true"], check=True)
        started = time.perf_counter()
        clones = parent.fork(10)
        forked = time.perf_counter()
        threads = [threading.Thread(target=clone.run, args=(["true"],)) for clone in clones]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answered = time.perf_counter()
        time.sleep(2)                # idle clones: what do they cost?
        private = [registry.memory_use(clone.info().pid)[0] for clone in clones]
        for clone in clones:
            clone.stop()
    finally:
        parent.stop()
    return forked - started, answered - started, private


def api_versus_exec(runs: int = RUNS) -> tuple[float, float]:
    """(p50 s of ``true`` through ``hartvm serve``, p50 s through ``hartvm exec``),
    one HTTP connection per command, as a curl would make."""
    with serving("bench-api") as (vm, port, token):
        def post() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port)
            connection.request("POST", f"/vms/{vm.name}/commands", json.dumps(
                {"args": ["true"]}), {"Authorization": f"Bearer {token}",
                                      "Content-Type": "application/json"})
            last = json.loads(connection.getresponse().read().splitlines()[-1])
            connection.close()
            assert last == {"exit": 0}, last

        def exec_() -> None:
            subprocess.run([sys.executable, "-m", "hartvm", "exec", vm.name, "--", "true"],
                           check=True, stdin=subprocess.DEVNULL)
        medians = []
        for command in (post, exec_):
            command()                                   # warm
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                command()
                times.append(time.perf_counter() - started)
            medians.append(statistics.median(times))
    return medians[0], medians[1]


def console_echo(count: int = KEYSTROKES) -> tuple[float, float]:
    """(p50, p90) ms from a key typed in the browser console (``hartvm serve``)
    to its echo arriving in the page, over ``count`` keys at a shell prompt."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "frontends"))
    import browser

    with serving("bench-console") as (vm, port, token):
        with tempfile.TemporaryDirectory() as profile:
            driver = browser.chromium(profile)
            try:
                browser.open_console(driver, port, token)
                browser.attach(driver, vm.name)
                browser.echo_latencies(driver, 5)            # warm
                return browser.echo_latencies(driver, count)
            finally:
                driver.quit()


@contextlib.contextmanager
def serving(name: str):
    """(a running VM called ``name``, the port of a ``hartvm serve``, its token),
    both stopped at the end."""
    import hartvm

    vm = hartvm.VM.up(name=name, progress=False)
    token = "bench-token"
    server = subprocess.Popen([sys.executable, "-m", "hartvm", "serve", "--listen",
                               "127.0.0.1:0"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "HARTVM_TOKEN": token})
    try:
        yield vm, int(re.search(r":(\d+) ", server.stdout.readline()).group(1)), token
    finally:
        server.terminate()
        server.wait()
        vm.stop()


@contextlib.contextmanager
def local_ray_cluster(nodes: int = 2):
    """The address of a Ray cluster of ``nodes`` nodes on this machine, one CPU
    each, torn down at the end (every process that inherited its marker)."""
    directory = tempfile.mkdtemp(prefix="hvb-", dir="/tmp")   # Ray's socket paths are short
    marker = f"HARTVM_BENCH_CLUSTER={directory}"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": ROOT, "HARTVM_BENCH_CLUSTER": directory}
    try:
        for node in range(nodes):
            where = ["--head", "--port", str(port), "--include-dashboard", "false"] \
                if node == 0 else ["--address", f"127.0.0.1:{port}"]
            subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "start",
                            *where, "--temp-dir", os.path.join(directory, str(node)),
                            "--num-cpus", "1", "--disable-usage-stats",
                            "--object-store-memory", "200000000"],
                           check=True, capture_output=True, env=env)
        yield f"127.0.0.1:{port}"
    finally:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as environ:
                    if marker.encode() in environ.read().split(b"\0"):
                        os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(directory, ignore_errors=True)


def fleet_versus_loop(count: int = FLEET_COMMANDS) -> tuple[float, float]:
    """(commands/s of ``count`` ``true`` through a two-node fleet, commands/s of
    ``count`` ``hartvm run -- true`` one after another)."""
    from hartvm import fleet

    with local_ray_cluster() as address, fleet.Fleet(address) as pool:
        pool.map(["true"] * 4)                      # the actors and their pools started
        started = time.perf_counter()
        results = pool.map(["true"] * count)
        fleet_rate = count / (time.perf_counter() - started)
    assert all(result.returncode == 0 for result in results)
    command = [sys.executable, "-m", "hartvm", "run", "--", "true"]
    subprocess.run(command, check=True, capture_output=True)       # the pool started
    started = time.perf_counter()
    for _ in range(count):
        subprocess.run(command, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return fleet_rate, count / (time.perf_counter() - started)


@contextlib.contextmanager
def private_state():
    """The run pools and VMs a benchmark starts live in a state directory of its
    own (the user's VMs are neither listed nor stopped), stopped at the end."""
    previous = os.environ.get("HARTVM_STATE_DIR")
    with tempfile.TemporaryDirectory() as state:
        os.environ["HARTVM_STATE_DIR"] = state
        try:
            yield
        finally:
            from hartvm.vmm.client import RemoteVM
            from hartvm.vmm.registry import list_vms
            for info in list_vms():
                RemoteVM(info.name).stop()
            if previous is None:
                del os.environ["HARTVM_STATE_DIR"]
            else:
                os.environ["HARTVM_STATE_DIR"] = previous


def main(qemu_boot_wall: float | None = None) -> None:
    with private_state():
        _report(qemu_boot_wall)
        _report_api()
        _report_console()
        _report_fleet()


def _report_api() -> None:
    api, exec_ = api_versus_exec()
    print(f"serve: POST true to a running VM: p50 {api * 1000:.0f} ms; hartvm exec: p50 "
          f"{exec_ * 1000:.0f} ms; {api / exec_:.2f}x (target <= 2x)")


def _report_console() -> None:
    p50, p90 = console_echo()
    print(f"console: keystroke to echo in the page (headless Chromium): p50 {p50:.1f} ms, "
          f"p90 {p90:.1f} ms ({KEYSTROKES} keys; target p50 <= 100 ms)")


def _report_fleet() -> None:
    fleet, loop = fleet_versus_loop()
    print(f"fleet: {FLEET_COMMANDS} true through 2 local Ray nodes: {fleet:.1f} commands/s; "
          f"hartvm run -- true in a loop: {loop:.1f} commands/s; {fleet / loop:.2f}x")


def _report(qemu_boot_wall) -> None:
    versus = ""
    median, p90 = run_true_latency()
    if qemu_boot_wall:
        versus = f"; QEMU boot to /init {qemu_boot_wall * 1000:.0f} ms, " \
                 f"{median / qemu_boot_wall:.2f}x"
    print(f"run true via the run pool: p50 {median * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms "
          f"({RUNS} runs{versus}; target p50 <= 100 ms)")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hartvm", "image", "build", "debian", "-q"],
                   check=True, capture_output=True)
    print(f"image build debian (mmdebstrap, apt download, configure in a guest): "
          f"{time.perf_counter() - started:.0f} s (target < 600 s)")
    debian, debian_p90 = run_true_latency(image="debian")
    print(f"run --image debian -- true: p50 {debian * 1000:.0f} ms, p90 {debian_p90 * 1000:.0f} "
          f"ms; {debian / median:.2f}x busybox's (target <= 1.5x)")
    python, python_p90 = run_true_latency(image="debian", argv=("python3", "-c", "pass"))
    print(f"run --image debian -- python3 -c pass: p50 {python * 1000:.0f} ms, p90 "
          f"{python_p90 * 1000:.0f} ms (target p50 <= 500 ms)")
    median, p90 = run_true_latency(runs=7, pool=False)
    print(f"run true restoring in-process (HARTVM_POOL=0): p50 {median * 1000:.0f} ms, "
          f"p90 {p90 * 1000:.0f} ms")
    print(f"{'guest RAM':>10} {'RAM data':>9} {'restore ms':>11} {'+ true ms':>10}")
    for size in SIZES:
        restore, answer, data = restore_latency(size)
        print(f"{size >> 20:>8}Mi {data / (1 << 20):>7.0f}Mi {restore * 1000:11.1f} "
              f"{answer * 1000:10.1f}")
    fork, answered, private = fork_ten()
    print(f"fork --count 10: {fork * 1000:.0f} ms to fork, {answered * 1000:.0f} ms until all "
          f"ten answered (target <= 1000 ms); private memory per idle clone "
          f"{max(private) / (1 << 20):.1f} MiB at most, {statistics.mean(private) / (1 << 20):.1f} "
          f"MiB on average (target <= 5 MiB)")


if __name__ == "__main__":
    if sys.argv[1:] == ["api"]:              # the serve figure alone
        with private_state():
            _report_api()
    elif sys.argv[1:] == ["console"]:        # the browser console's figure alone
        with private_state():
            _report_console()
    elif sys.argv[1:] == ["fleet"]:          # the fleet figure alone
        with private_state():
            _report_fleet()
    else:
        main()
