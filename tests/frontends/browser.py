"""Debian's headless Chromium driven by Selenium, on the console of a running
``hartvm serve``: for the console's tests and ``make bench``'s keystroke
figure (benchmarks/hypervisor.py).

Selenium is given Debian's browser and driver (``make browser`` installs
them), so Selenium Manager downloads nothing; the flags keep Chromium off
the network (its background connections are refused on a closed network,
and would be noise anyway) and its profile in a directory of the caller's.
"""

import statistics
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
# The terminal's lines as text (the page puts its xterm.js Terminal on window.hartvm).
SCREEN = """const buffer = hartvm.term.buffer.active, lines = [];
for (let y = 0; y < buffer.length; y++) lines.push(buffer.getLine(y).translateToString(true));
return lines.join("\\n");"""


def chromium(profile: str, width: int = 1200, height: int = 800) -> webdriver.Chrome:
    """A headless Chromium with its profile in the directory ``profile``."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def wait_for(condition, timeout: float = 60, what: str = "a condition"):
    """``condition()``'s first true value, polled; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"no {what} in {timeout} s")


def screen(driver) -> str:
    return driver.execute_script(SCREEN)


def open_console(driver, port: int, token: str) -> None:
    """Load the page with the token in its URL, as ``hartvm serve`` prints it."""
    driver.get(f"http://127.0.0.1:{port}/console?token={token}")
    wait_for(lambda: driver.execute_script("return !!window.hartvm"), 30, "console script")


def click(driver, vm: str, action: str, timeout: float = 60) -> None:
    """Click a button in the VM's row (found and clicked at once in the page: the
    page redraws its list every few seconds), after this script has returned (a
    click that opens a dialog must not hold it)."""
    wait_for(lambda: driver.execute_script(
        "const button = document.querySelector(arguments[0]);"
        "if (button) setTimeout(() => button.click()); return !!button;",
        f'#vms tr[data-vm="{vm}"] button[data-action="{action}"]'),
        timeout, f"{action} button of VM {vm}")


def dialog(driver, timeout: float = 30):
    """The page's open prompt or confirm dialog, once it has opened."""
    return WebDriverWait(driver, timeout).until(expected_conditions.alert_is_present())


def attach(driver, name: str) -> None:
    """Click the VM's attach button, and wait for its shell's prompt."""
    click(driver, name, "attach")
    wait_for(lambda: screen(driver).rstrip().endswith("#"), 60, "shell prompt")


def echo_latencies(driver, count: int = 30) -> tuple[float, float]:
    """(p50, p90) ms from a keystroke in the page to its echo arriving there."""
    times = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"hartvm.echoLatencies({count}).then(done, (error) => done(String(error)));")
    assert isinstance(times, list) and len(times) == count, times
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]
