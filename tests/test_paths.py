"""hartvm.paths: the cache and state directories, as the XDG Base Directory spec says."""

import subprocess
import sys
from pathlib import Path

import pytest

from hartvm import paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(monkeypatch, tmp_path):
    """A home directory of its own, and no XDG or hartvm variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("XDG_CACHE_HOME", "XDG_STATE_HOME", "HARTVM_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_defaults_are_in_the_home_directory(home):
    assert paths.cache_home() == home / ".cache" / "hartvm"
    assert paths.state_home() == home / ".local" / "state" / "hartvm"


def test_absolute_xdg_directories_are_honoured(home, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    assert paths.cache_home() == home / "cache" / "hartvm"
    assert paths.state_home() == home / "state" / "hartvm"


@pytest.mark.parametrize("value", ["relative/dir", "cache", "./x", ""])
def test_relative_or_empty_xdg_directories_are_ignored(home, monkeypatch, value):
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    monkeypatch.setenv("XDG_STATE_HOME", value)
    assert paths.cache_home() == home / ".cache" / "hartvm"
    assert paths.state_home() == home / ".local" / "state" / "hartvm"


def test_hartvm_state_dir_wins(home, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("HARTVM_STATE_DIR", str(home / "vms-here"))
    assert paths.state_home() == home / "vms-here"
    monkeypatch.setenv("HARTVM_STATE_DIR", "")          # empty: as if unset
    assert paths.state_home() == home / "state" / "hartvm"


def test_users_of_the_directories(home, monkeypatch):
    from hartvm.guest import debian
    from hartvm.vmm import registry
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    assert debian.cache_root() == home / ".cache" / "hartvm"
    monkeypatch.setenv("XDG_STATE_HOME", "relative")
    assert registry.vms_dir() == home / ".local" / "state" / "hartvm" / "vms"
    monkeypatch.setenv("HARTVM_STATE_DIR", str(home / "s"))
    assert registry.vms_dir() == home / "s" / "vms"


def test_imports_neither_numpy_nor_numba():
    code = ("import sys, hartvm.paths; "
            "print(sorted(m for m in ('numpy', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
