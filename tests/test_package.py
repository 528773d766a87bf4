"""The package as users meet it: a light import, every public name resolvable, typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import keepalive

ROOT = Path(__file__).resolve().parent.parent


def _modules_after(code: str) -> set[str]:
    probe = f"import sys; {code}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(done.stdout.split())


def test_import_keepalive_imports_neither_asyncio_nor_psutil() -> None:
    loaded = _modules_after("import keepalive")
    assert "keepalive" in loaded
    assert not {"asyncio", "psutil", "ssl"} & loaded


def test_the_kernel_layer_still_imports_neither_asyncio_nor_psutil() -> None:
    code = (
        "import socket, keepalive; s = socket.socket(); "
        "keepalive.configure(s, keepalive.KeepaliveConfig()); keepalive.inspect(s); "
        "keepalive.system_defaults(); keepalive.HeartbeatConfig(1, 1); keepalive.Backoff(); "
        "import keepalive.sync"
    )
    loaded = _modules_after(code)
    assert not {"asyncio", "psutil"} & loaded


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names Linux's module")
def test_the_first_configure_loads_only_the_kernel_layer() -> None:
    """`import keepalive` and the first configure() are what a short-lived process pays on
    every run: only the kernel layer's own modules and the running platform's table load,
    not dataclasses, typing, inspect or numbers (several milliseconds), nor other OSes'.
    Without site (-S), so that nothing the environment's .pth files import hides a cost."""
    code = (
        "import sys; import socket; before = set(sys.modules); import keepalive; "
        "s = socket.socket(); keepalive.configure(s, keepalive.KeepaliveConfig(idle=60)); "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(done.stdout.split())
    assert {name for name in loaded if name.startswith("keepalive")} == {
        "keepalive",
        "keepalive._record",
        "keepalive._validate",
        "keepalive.config",
        "keepalive.errors",
        "keepalive.platforms",
        "keepalive.platforms._base",
        "keepalive.platforms.linux",
        "keepalive.sockets",
    }
    assert {name for name in loaded if not name.startswith("keepalive")} <= {"__future__"}


@pytest.mark.parametrize("name", keepalive.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(keepalive, name) is not None


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        keepalive.no_such_thing  # type: ignore[attr-defined]  # noqa: B018


def test_version_matches_the_distribution() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    with (ROOT / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    assert keepalive.__version__ == project["version"]
    assert project["name"] == "tcp-keepalive"
    assert project["requires-python"] == ">=3.10"
    assert sorted(dep.split(">")[0] for dep in project["dependencies"]) == [
        "psutil",
        "typing-extensions",
    ]


def test_package_is_typed() -> None:
    assert (ROOT / "keepalive" / "py.typed").is_file()
