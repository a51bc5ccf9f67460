"""``hartvm serve``: the HTTP API as a client sees it, over loopback, with a
real server process and real VMs (one VM shared by the module's tests), and
the README's curl examples run as written."""

import http.client
import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import ROOT

TOKEN = "test-token-0123456789"


def _start(state, token=TOKEN):
    env = dict(os.environ, HARTVM_STATE_DIR=str(state))
    env.pop("HARTVM_TOKEN", None)
    if token is not None:
        env["HARTVM_TOKEN"] = token
    process = subprocess.Popen([sys.executable, "-m", "hartvm", "serve", "--listen",
                                "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=ROOT)
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+) \(bearer token in (.*)\)", line)
    assert match, (line, process.stderr.read() if process.poll() is not None else "")
    return process, int(match.group(1)), match.group(2)


class Client:
    def __init__(self, port, token=TOKEN):
        self.port, self.token = port, token

    def request(self, method, path, body=None, token=None, headers=None):
        """(status, parsed JSON or bytes)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = dict(headers or {})
        token = self.token if token is None else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(data)
        return response.status, data

    def stream(self, name, **command):
        """A command's answer as it comes: (connection, response)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        connection.request("POST", f"/vms/{name}/commands", body=json.dumps(command),
                           headers={"Authorization": f"Bearer {self.token}",
                                    "Content-Type": "application/json"})
        return connection, connection.getresponse()

    def run(self, name, **command):
        """Every line of a command's answer."""
        connection, response = self.stream(name, **command)
        assert response.status == 200, response.read()
        lines = [json.loads(line) for line in response.read().splitlines()]
        connection.close()
        return lines


def _output(lines, stream):
    return "".join(line.get("text", "") for line in lines if line.get("stream") == stream)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("serve-state")
    process, port, _ = _start(state)
    client = Client(port)
    client.state = state
    yield client
    stop_server(client, process)


def stop_server(client, process) -> None:
    """Stop every VM the server lists, then the server."""
    for info in client.request("GET", "/vms")[1]:
        client.request("DELETE", f"/vms/{info['name']}")
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def vm(server):
    status, info = server.request("POST", "/vms", {"name": "box"})
    assert status == 201, info
    assert info["name"] == "box" and info["state"] == "running"
    return "box"


def test_requests_without_the_token_are_refused_and_do_nothing(server, vm):
    for token in ("", "wrong", TOKEN + "x"):
        for method, path, body in (("GET", "/vms", None), ("GET", "/openapi.json", None),
                                   ("POST", "/vms", {"name": "intruder"}),
                                   ("POST", "/vms/box/commands",
                                    {"args": ["touch", "/root/pwned"]}),
                                   ("PUT", "/vms/box/files?path=/root/pwned", b"x"),
                                   ("DELETE", "/vms/box", None)):
            status, answer = server.request(method, path, body, token=token)
            assert status == 401, (method, path, answer)
            assert set(answer) == {"error"}
    # Other schemes, the token alone.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for headers in ({"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
        connection.request("DELETE", "/vms/box", headers=headers)
        response = connection.getresponse()
        assert response.status == 401 and response.getheader("WWW-Authenticate") == "Bearer"
        response.read()
    assert server.request("GET", "/vms/intruder")[0] == 404
    assert server.request("GET", "/vms/box")[1]["state"] == "running"
    assert _output(server.run(vm, args=["sh", "-c", "ls /root/pwned || echo absent"],
                              text=True), "stdout") == "absent\n"


def test_openapi_description_and_listing(server, vm):
    status, spec = server.request("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {"/vms", "/vms/{name}", "/vms/{name}/commands", "/vms/{name}/files",
            "/vms/{name}/snapshots", "/vms/{name}/forks"} <= set(spec["paths"])
    status, vms = server.request("GET", "/vms")
    assert status == 200 and [info["name"] for info in vms] == ["box"]
    status, info = server.request("GET", "/vms/box")
    assert status == 200 and info["memory"] == 256 << 20 and info["harts"] == 1


def test_command_with_stdin_streams_stdout_stderr_and_status(server, vm):
    lines = server.run(vm, args=["sh", "-c", "tr a-z A-Z; echo oops >&2; exit 3"],
                       input="hello\n", text=True)
    assert set(lines[0]) == {"id"}
    assert _output(lines, "stdout") == "HELLO\n" and _output(lines, "stderr") == "oops\n"
    assert lines[-1] == {"exit": 3}
    # Bytes both ways as base64 (the default).
    lines = server.run(vm, args=["cat"], input_base64="AP8K")
    assert [line["base64"] for line in lines if "stream" in line] == ["AP8K"]
    assert lines[-1] == {"exit": 0}
    lines = server.run(vm, args=["no-such-command"], text=True)
    assert lines[-1] == {"exit": 127}
    lines = server.run(vm, args=["pwd"], cwd="/tmp", env={"X": "1"}, text=True)
    assert _output(lines, "stdout") == "/tmp\n"


def test_output_comes_as_it_is_written(server, vm):
    started = time.monotonic()
    connection, response = server.stream(vm, args=["sh", "-c", "echo first; sleep 3; echo last"],
                                         text=True)
    assert json.loads(response.readline())["id"]
    assert json.loads(response.readline()) == {"stream": "stdout", "text": "first\n"}
    assert time.monotonic() - started < 2.5
    assert json.loads(response.readline()) == {"stream": "stdout", "text": "last\n"}
    assert json.loads(response.readline()) == {"exit": 0}
    connection.close()


def test_timeout_kill_and_a_client_that_goes_away(server, vm):
    lines = server.run(vm, args=["sh", "-c", "echo started; sleep 60"], timeout=1, text=True)
    assert _output(lines, "stdout") == "started\n"
    assert lines[-1] == {"exit": 124, "timeout": True}
    connection, response = server.stream(vm, args=["sleep", "60"])
    key = json.loads(response.readline())["id"]
    assert response.getheader("X-Command-Id") == key
    assert server.request("DELETE", f"/vms/{vm}/commands/{key}")[0] == 204
    assert json.loads(response.readline()) == {"killed": True}
    connection.close()
    assert server.request("DELETE", f"/vms/{vm}/commands/{key}")[0] == 404
    # A client that disconnects: its command is killed, the next one runs at once.
    connection, response = server.stream(vm, args=["sleep", "60"])
    response.readline()
    connection.close()
    started = time.monotonic()
    assert server.run(vm, args=["true"])[-1] == {"exit": 0}
    assert time.monotonic() - started < 10


def test_files_up_and_down(server, vm):
    data = bytes(range(256)) * 1000
    status, _ = server.request("PUT", f"/vms/{vm}/files?path=/root/blob&mode=600", data)
    assert status == 204
    assert server.request("GET", f"/vms/{vm}/files?path=/root/blob") == (200, data)
    assert _output(server.run(vm, args=["stat", "-c", "%a", "/root/blob"], text=True),
                   "stdout") == "600\n"
    status, answer = server.request("GET", f"/vms/{vm}/files?path=/root/none")
    assert status == 404 and "/root/none" in answer["error"]
    status, answer = server.request("PUT", f"/vms/{vm}/files?path=/root/x&mode=9", b"")
    assert status == 400 and "mode" in answer["error"]


def test_errors_are_json_with_fitting_statuses(server, vm):
    cases = [("GET", "/vms/no-such-vm", None, 404),
             ("DELETE", "/vms/no-such-vm", None, 404),
             ("POST", "/vms/no-such-vm/commands", {"args": ["true"]}, 404),
             ("GET", "/vms/Bad%20Name", None, 400),
             ("POST", "/vms", {"name": "box"}, 409),
             ("POST", "/vms", {"name": "x", "memory": "lots"}, 400),
             ("POST", "/vms", {"name": "x", "harts": "many"}, 400),
             ("POST", "/vms", {"name": "x", "snapshot": "no-such-snapshot"}, 404),
             ("POST", f"/vms/{vm}/commands", {"args": []}, 400),
             ("POST", f"/vms/{vm}/commands", {"args": ["true"], "timeout": -1}, 400),
             ("POST", f"/vms/{vm}/commands", {"args": ["true"], "input_base64": "!"}, 400),
             ("POST", f"/vms/{vm}/commands", {"args": ["a\0b"]}, 400),
             ("POST", f"/vms/{vm}/commands", b"not json", 400),
             ("POST", f"/vms/{vm}/snapshots", {"name": "../escape"}, 400),
             ("POST", f"/vms/{vm}/forks", {"count": 0}, 400)]
    for method, path, body, expected in cases:
        headers = {"Content-Type": "application/json"} if isinstance(body, bytes) else None
        status, answer = server.request(method, path, body, headers=headers)
        assert status == expected, (method, path, body, answer)
        assert set(answer) == {"error"} and "\n" not in answer["error"], answer
    assert [info["name"] for info in server.request("GET", "/vms")[1]] == ["box"]


def test_bodies_are_bounded(server, vm):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", f"/vms/{vm}/commands")
    connection.putheader("Authorization", f"Bearer {TOKEN}")
    connection.putheader("Content-Length", str(1 << 40))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "over" in json.loads(response.read())["error"]
    connection.close()


def test_snapshot_restore_fork_and_stop(server, vm):
    server.run(vm, args=["sh", "-c", "echo kept > /root/note"])
    assert server.request("POST", f"/vms/{vm}/snapshots", {"name": "snap"}) == \
        (201, {"name": "snap"})
    assert server.request("POST", f"/vms/{vm}/snapshots", {"name": "snap"})[0] == 409
    assert server.request("GET", "/snapshots") == (200, [{"name": "snap"}])
    status, info = server.request("POST", "/vms", {"name": "again", "snapshot": "snap"})
    assert status == 201, info
    assert _output(server.run("again", args=["cat", "/root/note"], text=True),
                   "stdout") == "kept\n"
    status, clones = server.request("POST", f"/vms/{vm}/forks", {"count": 2})
    assert status == 201 and [c["name"] for c in clones] == ["box-1", "box-2"]
    assert all(clone["parent"] == "box" for clone in clones)
    assert _output(server.run("box-2", args=["hostname"], text=True), "stdout") == "box-2\n"
    for name in ("again", "box-1", "box-2"):
        assert server.request("DELETE", f"/vms/{name}")[0] == 204
        assert server.request("GET", f"/vms/{name}")[0] == 404
    assert server.request("DELETE", "/snapshots/snap")[0] == 204
    assert server.request("DELETE", "/snapshots/snap")[0] == 404


def test_readme_curl_examples_run(server):
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("### An HTTP API: `hartvm serve`"):]
    example = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    example = example.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    result = subprocess.run(["sh", "-ec", example], capture_output=True, text=True,
                            env=dict(os.environ, HARTVM_TOKEN=TOKEN), timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert '{"stream": "stdout", "text": "HELLO\\n"}' in out
    assert '{"stream": "stderr", "text": "done\\n"}' in out and '{"exit": 0}' in out
    assert "echo hi from a script" in out
    assert '"name":"api-again"' in out and '"name":"api-2"' in out
    names = [info["name"] for info in server.request("GET", "/vms")[1]]
    assert "api" not in names and "api-again" not in names
    assert server.request("GET", "/snapshots") == (200, [])


def test_a_generated_token_is_the_users_alone(tmp_path):
    process, port, token_file = _start(tmp_path, token=None)
    try:
        assert token_file == str(tmp_path / "serve-token")
        assert os.stat(token_file).st_mode & 0o777 == 0o600
        token = open(token_file).read().strip()
        assert len(token) >= 32
        assert Client(port, token).request("GET", "/vms") == (200, [])
        assert Client(port, "x" + token).request("GET", "/vms")[0] == 401
    finally:
        process.terminate()
        process.wait(timeout=30)
