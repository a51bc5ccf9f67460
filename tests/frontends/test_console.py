"""The browser console of ``hartvm serve`` in a real browser (Debian's headless
Chromium driven by Selenium, see browser.py), over a real server process
and a real VM: typing into the terminal and reading the answer back from
xterm.js's buffer, resizing, colours, paste and copy, the buttons, the
console log; the token exchanged for a cookie, and the page and the
WebSocket refused without it. Screenshots go to a directory under pytest's
temporary path, and to ``$HARTVM_ARTIFACTS`` too when it is set."""

import http.client
import json
import os
import shutil

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from browser import attach, chromium, click, dialog, echo_latencies, open_console, screen, wait_for
from test_serve import TOKEN, Client, _start, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("console-state")
    process, port, _ = _start(state)
    client = Client(port)
    client.console_line = process.stdout.readline()
    status, info = client.request("POST", "/vms", {"name": "box"})
    assert status == 201, info
    yield client
    stop_server(client, process)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Where screenshots go: saved(name) writes one there and returns its path."""
    directory = tmp_path_factory.mktemp("console-artifacts")
    extra = os.environ.get("HARTVM_ARTIFACTS")

    def saved(driver, name):
        path = str(directory / name)
        assert driver.save_screenshot(path)
        if extra:
            os.makedirs(extra, exist_ok=True)
            shutil.copy(path, extra)
        return path
    return saved


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    driver = chromium(str(tmp_path_factory.mktemp("chromium-profile")))
    yield driver
    driver.quit()


def _terminal_url(port, rows=24, columns=80):
    return f"ws://127.0.0.1:{port}/vms/box/terminal?rows={rows}&columns={columns}"


def _cookie(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", f"/console?token={TOKEN}")
    response = connection.getresponse()
    response.read()
    assert response.status == 303 and response.getheader("Location") == "/console"
    cookie = response.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return cookie.split(";")[0]


def _no_shell_left(server):
    """The VM serves a command at once: no shell holds it."""
    lines = server.run("box", args=["echo", "free"], text=True, timeout=20)
    assert lines[-1] == {"exit": 0}, lines


def test_serve_prints_the_console_url(server):
    assert server.console_line.strip() == \
        f"hartvm console: http://127.0.0.1:{server.port}/console?token={TOKEN}"


def test_page_and_websocket_refused_without_the_token(server):
    for path in ("/console", "/console?token=wrong", f"/console?token={TOKEN}x",
                 "/console/xterm.js", "/console/console.js", "/vms/box/log"):
        status, answer = server.request("GET", path, token="")
        assert status == 401 and set(answer) == {"error"}, (path, answer)
    for headers in ({}, {"Authorization": "Bearer wrong"},
                    {"Cookie": "hartvm-console=0123", "Origin": f"http://127.0.0.1:{server.port}"}):
        with pytest.raises(InvalidStatus) as refused:
            connect(_terminal_url(server.port), additional_headers=headers, open_timeout=30)
        assert refused.value.response.status_code == 401
        assert set(json.loads(refused.value.response.body)) == {"error"}
    # The cookie, from another site's page: refused too (cross-site WebSocket hijacking),
    # and so are its requests that change anything.
    cookie = _cookie(server)
    for origin in ("http://evil.example", None):
        headers = {"Cookie": cookie, **({"Origin": origin} if origin else {})}
        with pytest.raises(InvalidStatus) as refused:
            connect(_terminal_url(server.port), additional_headers=headers, open_timeout=30,
                    origin=None)
        assert refused.value.response.status_code == 403
        status, answer = server.request("POST", "/vms", {"name": "intruder"}, token="",
                                        headers=headers)
        assert status == 403, answer
    assert server.request("GET", "/vms/intruder")[0] == 404
    _no_shell_left(server)


def test_terminal_websocket_survives_hostile_messages(server):
    """Bad sizes, garbage and oversized messages change nothing but their own
    terminal; closing a terminal ends its shell."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for query in ("rows=0&columns=80", "rows=x&columns=80", "rows=24&columns=99999999999"):
        with connect(f"ws://127.0.0.1:{server.port}/vms/box/terminal?{query}",
                     additional_headers=auth, open_timeout=30) as ws:
            assert "error" in json.loads(ws.recv(timeout=30))
    with connect(_terminal_url(server.port), additional_headers=auth, open_timeout=30) as ws:
        for message in ("not json", "[1, 2]", '{"rows": -1, "columns": 5}',
                        '{"rows": 1e9, "columns": "80"}', b"\xff\xfe\x00garbage\x15"):
            ws.send(message)
        ws.send('{"rows": 33, "columns": 101}')
        ws.send(b"\x15stty size\r")
        seen = b""
        while b"33 101" not in seen:
            seen += ws.recv(timeout=30)
        ws.send(b"x" * (1 << 17))           # over the server's bound: it closes this one
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=30)
    with connect(_terminal_url(server.port), additional_headers=auth, open_timeout=30) as ws:
        ws.send(b"sleep 1000\r")
        ws.recv(timeout=30)
    _no_shell_left(server)              # the sleep ended with its terminal
    with connect(f"ws://127.0.0.1:{server.port}/vms/no-such-vm/terminal",
                 additional_headers=auth, open_timeout=30) as ws:
        assert "no-such-vm" in json.loads(ws.recv(timeout=30))["error"]


def test_console_in_the_browser(server, browser, artifacts):
    open_console(browser, server.port, TOKEN)
    # The token is exchanged for a cookie that scripts cannot read, and leaves the address.
    assert browser.current_url == f"http://127.0.0.1:{server.port}/console"
    assert browser.execute_script("return document.cookie") == ""
    attach(browser, "box")
    keys = browser.find_element("css selector", ".xterm-helper-textarea")
    keys.send_keys("echo $((6*7))\n")
    wait_for(lambda: "\n42\n" in screen(browser), 30, "42 in the terminal")

    keys.send_keys("echo $TERM; printf '\\033[31mred\\033[0m\\n'\n")
    wait_for(lambda: "\nxterm-256color\n" in screen(browser), 30, "TERM")
    colour = browser.execute_script("""
        const buffer = hartvm.term.buffer.active;
        for (let y = 0; y < buffer.length; y++) {
            const line = buffer.getLine(y);
            if (line.translateToString(true) === "red") {
                const cell = line.getCell(0);
                return [cell.isFgPalette(), cell.getFgColor()];
            }
        }""")
    assert colour == [True, 1]                  # red, palette colour 1

    # Resizing the window reaches the guest's terminal.
    before = browser.execute_script("return [hartvm.term.rows, hartvm.term.cols]")
    browser.set_window_size(900, 600)
    size = wait_for(lambda: (lambda now: now != before and now)(
        browser.execute_script("return [hartvm.term.rows, hartvm.term.cols]")), 30, "resize")
    keys.send_keys("stty size\n")
    wait_for(lambda: f"\n{size[0]} {size[1]}\n" in screen(browser), 30, f"stty size {size}")

    # Paste as the browser delivers it (a paste event on xterm.js's text area), and copy.
    browser.execute_script("""
        const data = new DataTransfer();
        data.setData("text/plain", "echo pasted-$((1+1))\\n");
        document.querySelector(".xterm-helper-textarea").dispatchEvent(
            new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true}));
    """)
    wait_for(lambda: "\npasted-2\n" in screen(browser), 30, "the pasted command's output")
    assert "pasted-2" in browser.execute_script(
        "hartvm.term.selectAll(); return hartvm.term.getSelection()")

    # The VM's console log, as hartvm logs shows it.
    keys.send_keys("echo log-marker > /dev/ttyS0\n")
    wait_for(lambda: "log-marker" in browser.find_element("id", "log").text, 30, "log line")

    p50, p90 = echo_latencies(browser)
    print(f"console keystroke to echo: p50 {p50:.1f} ms, p90 {p90:.1f} ms")
    artifacts(browser, "console.png")


def test_console_buttons(server, browser, artifacts):
    """Fork, snapshot, stop and start, as the page's buttons do them."""
    def status():
        return browser.find_element("id", "status").text

    open_console(browser, server.port, TOKEN)           # with the cookie already
    assert browser.current_url == f"http://127.0.0.1:{server.port}/console"
    attach(browser, "box")
    click(browser, "box", "fork")
    wait_for(lambda: status() == "forked box: box-1", 120, "the fork")
    wait_for(lambda: browser.find_elements("css selector", '#vms tr[data-vm="box-1"]'), 30,
             "box-1 listed")
    wait_for(lambda: browser.execute_script(
        "return hartvm.socket !== null && hartvm.socket.readyState === WebSocket.OPEN"),
        60, "the terminal attached again")

    click(browser, "box", "snapshot")
    prompt = dialog(browser)
    prompt.send_keys("box-snap")
    prompt.accept()
    wait_for(lambda: status().startswith("snapshot box: saved as box-snap"), 120, "snapshot")
    assert server.request("GET", "/snapshots") == (200, [{"name": "box-snap"}])

    form = browser.find_element("id", "start")
    form.find_element("name", "name").send_keys("again")
    form.find_element("name", "snapshot").send_keys("box-snap")
    form.find_element("css selector", "button").click()
    wait_for(lambda: status() == "started again", 120, "the start")
    attach(browser, "again")
    artifacts(browser, "console-buttons.png")

    for vm in ("again", "box-1"):
        click(browser, vm, "stop")
        dialog(browser).accept()
        wait_for(lambda: not browser.find_elements("css selector", f'#vms tr[data-vm="{vm}"]'),
                 60, f"{vm} gone")
    assert [info["name"] for info in server.request("GET", "/vms")[1]] == ["box"]
    assert server.request("DELETE", "/snapshots/box-snap")[0] == 204
