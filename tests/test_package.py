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
