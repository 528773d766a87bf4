"""What `keepalive.install()` adds to each outbound connect() (issue #12).

The contenders open, connect and close one TCP connection to a listener on 127.0.0.1:

- ``plain``: ``socket.socket()``, ``connect()``, ``close()``;
- ``plain + setsockopt``: the same, with the four setsockopt calls that apply the config
  written by hand before ``connect()``;
- ``plain + getsockopt + setsockopt``: and before them the one getsockopt(SO_KEEPALIVE) that
  tells whether the application configured keepalive itself;
- ``install``: ``plain`` with ``keepalive.install(cfg, loopback=True)`` in force: the default
  mode, which makes exactly the calls of the previous line;
- ``install, override``: with ``override=True``, which makes those of ``plain + setsockopt``.

Goal: each mode at most 1.05x a plain connect() plus the socket-option calls it makes, written
by hand (its baseline); ``install`` against ``plain + setsockopt`` is shown too. The listener
(accept, close, nothing else) runs in a child process, on the other core; the times are this
process's own CPU time (user + system: ``time.process_time()``), which other work on a shared
machine inflates far less than wall-clock time. The contenders run interleaved in short
blocks, alternating which goes first (install() and a first connect before an ``install``
block, uninstall() after it, all untimed); each ratio is the median of the per-block ratios,
shown with its interquartile range and the range of all.

    python benchmarks/install.py [--blocks 300] [--connects 100] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from socket import SO_KEEPALIVE, SOL_SOCKET

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this checkout, whatever else is installed

import keepalive  # noqa: E402
import keepalive.installer as ki  # noqa: E402

GOAL = 1.05  # x a plain connect() plus the setsockopt calls
CFG = keepalive.KeepaliveConfig(idle=60, interval=10, count=5)
CALLS = keepalive.socket_options(CFG)  # the exact calls install() makes on this platform

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]

_LISTENER = """
import socket, sys
server = socket.create_server(("127.0.0.1", 0), backlog=4096)
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    conn.close()
"""


def _plain(address: tuple[str, int], count: int) -> float:
    start = clock()
    for _ in range(count):
        sock = socket.socket()
        sock.connect(address)
        sock.close()
    return (clock() - start) / count


def _by_hand(address: tuple[str, int], count: int) -> float:
    first, second, third, fourth = CALLS
    start = clock()
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(*first)
        sock.setsockopt(*second)
        sock.setsockopt(*third)
        sock.setsockopt(*fourth)
        sock.connect(address)
        sock.close()
    return (clock() - start) / count


def _by_hand_reading(address: tuple[str, int], count: int) -> float:
    first, second, third, fourth = CALLS
    start = clock()
    for _ in range(count):
        sock = socket.socket()
        if not sock.getsockopt(SOL_SOCKET, SO_KEEPALIVE):
            sock.setsockopt(*first)
            sock.setsockopt(*second)
            sock.setsockopt(*third)
            sock.setsockopt(*fourth)
        sock.connect(address)
        sock.close()
    return (clock() - start) / count


def _installed(address: tuple[str, int], count: int, *, override: bool = False) -> float:
    ki.install(CFG, loopback=True, override=override)
    try:
        with socket.socket() as sock:  # untimed: the first connect decides for the address
            sock.connect(address)
        return _plain(address, count)
    finally:
        ki.uninstall()


def _summary(values: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return f"{median:.3f}x [IQR {q1:.3f} .. {q3:.3f}; all {min(values):.3f} .. {max(values):.3f}]"


def _check(address: tuple[str, int]) -> None:
    """The comparison is fair only if install() makes exactly the calls made by hand, and
    nothing when it is not installed."""
    assert len(CALLS) == 4, CALLS
    assert (SOL_SOCKET, SO_KEEPALIVE, 1) in CALLS, CALLS
    ki.install(CFG, loopback=True)
    try:
        with socket.socket() as sock:
            sock.connect(address)
            for level, option, value in CALLS:
                assert sock.getsockopt(level, option) == value, (level, option)
        status = ki.installed()
        assert status is not None
        assert status.configured == 1, status
    finally:
        ki.uninstall()
    assert "connect" not in vars(socket.socket)
    with socket.socket() as sock:
        sock.connect(address)
        assert sock.getsockopt(SOL_SOCKET, SO_KEEPALIVE) == 0


def bench(blocks: int, connects: int) -> dict[str, list[float]]:
    listener = subprocess.Popen(
        [sys.executable, "-c", _LISTENER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert listener.stdout is not None
        address = ("127.0.0.1", int(listener.stdout.readline()))
        _check(address)
        contenders: dict[str, Callable[[tuple[str, int], int], float]] = {
            "plain": _plain,
            "plain + setsockopt": _by_hand,
            "plain + getsockopt + setsockopt": _by_hand_reading,
            "install": _installed,
            "install, override": lambda address, count: _installed(address, count, override=True),
        }
        for run in contenders.values():  # warm up
            run(address, connects)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        order = list(contenders.items())
        for index in range(blocks):
            for name, run in order if index % 2 else order[::-1]:
                times[name].append(run(address, connects))
        return times
    finally:
        listener.kill()
        listener.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=300, help="blocks per contender")
    parser.add_argument("--connects", type=int, default=100, help="connections per block")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    print(f"clock: {args.clock} time ({clock.__name__}); keepalive from {ROOT / 'keepalive'}")
    times = bench(args.blocks, args.connects)
    baselines = {
        "plain": "plain + setsockopt",
        "install": "plain + getsockopt + setsockopt",
        "install, override": "plain + setsockopt",
    }
    print(f"{args.blocks} blocks of {args.connects} connections (us per connection):")
    for name, values in times.items():
        line = f"  {name:32s}: {statistics.median(values) * 1e6:7.2f}"
        base = baselines.get(name)
        if base is not None:
            ratios = [ours / b for b, ours in zip(times[base], values, strict=True)]
            line += f"\n      / {base}: {_summary(ratios)}"
            if name != "plain":
                verdict = "met" if statistics.median(ratios) <= GOAL else "NOT met"
                line += f" (limit {GOAL:.2f}x)  {verdict}"
        if name == "install":
            ratios = [o / b for b, o in zip(times["plain + setsockopt"], values, strict=True)]
            line += f"\n      / plain + setsockopt: {_summary(ratios)} (information)"
        print(line)


if __name__ == "__main__":
    main()
