"""The resilient-client recipes in docs/reconnect.md run as written, against a loopback
server that is killed once mid-session: each recipe reconnects and resubscribes."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from keepalive.testing import EchoServer

DOC = Path(__file__).resolve().parent.parent / "docs" / "reconnect.md"


def _recipe(heading: str) -> str:
    text = DOC.read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no code block under {heading!r}"
    return match.group(1)


def _point_at(code: str, server: EchoServer) -> str:
    host, port = server.address
    assert '("10.0.0.5", 7000)' in code
    return code.replace('("10.0.0.5", 7000)', repr((host, port)))


def _kill_once_then_wait(server: EchoServer, lines: list[bytes], stop: threading.Event) -> None:
    """The echo server repeats each SUBSCRIBE line; kill the first connection once it has."""
    deadline = time.monotonic() + 10
    while not lines and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill_connections()
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()


@pytest.mark.slow
def test_blocking_recipe_reconnects_and_resubscribes() -> None:
    code = _recipe("### A resilient blocking client in 15 lines")
    assert 'input("running; press Enter to stop\\n")' in code
    lines: list[bytes] = []
    stop = threading.Event()
    with EchoServer() as server:
        code = _point_at(code, server)
        code = code.replace('input("running; press Enter to stop\\n")', "stop.wait(15)")
        code = code.replace("Backoff(max_delay=30)", "Backoff(initial=0.05, max_delay=0.2)")
        code = code.replace("print(line)", "lines.append(line)")
        code = code.replace("logging.basicConfig(level=logging.INFO)", "pass")
        killer = threading.Thread(target=_kill_once_then_wait, args=(server, lines, stop))
        killer.start()
        exec(compile(code, str(DOC), "exec"), {"lines": lines, "stop": stop})
        killer.join()
    assert lines[:2] == [b"SUBSCRIBE prices\n", b"SUBSCRIBE prices\n"]


@pytest.mark.slow
def test_asyncio_recipe_reconnects_and_resubscribes() -> None:
    code = _recipe("### A resilient asyncio client in 15 lines")
    assert "await asyncio.Event().wait()" in code
    lines: list[bytes] = []
    stop = threading.Event()
    with EchoServer() as server:
        code = _point_at(code, server)
        code = code.replace(
            "await asyncio.Event().wait()",
            "await asyncio.get_running_loop().run_in_executor(None, stop.wait, 15)",
        )
        code = code.replace("Backoff(max_delay=30)", "Backoff(initial=0.05, max_delay=0.2)")
        code = code.replace("print(line)", "lines.append(line)")
        killer = threading.Thread(target=_kill_once_then_wait, args=(server, lines, stop))
        killer.start()
        exec(compile(code, str(DOC), "exec"), {"lines": lines, "stop": stop})
        killer.join()
    assert lines[:2] == [b"SUBSCRIBE prices\n", b"SUBSCRIBE prices\n"]
