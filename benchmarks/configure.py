"""How much `keepalive.configure()` costs against hand-written setsockopt calls, and what
`import keepalive` adds to `import socket`.

Goals (issue #2): configure() at most 1.2x the bare calls; import at most 5 ms more.
Both are measured in this one run, interleaved, and reported as medians of several rounds,
since absolute times drift on shared machines.

    python benchmarks/configure.py [--rounds 15] [--calls 20000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import keepalive

IPPROTO_TCP = socket.IPPROTO_TCP


def _connected_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    return server, client, accepted


def _per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def bench_configure(rounds: int, calls: int) -> tuple[float, float]:
    server, client, accepted = _connected_pair()
    cfg = keepalive.KeepaliveConfig(idle=60, interval=10, count=5, user_timeout=110)
    # The same options, values and order that configure() applies on this platform.
    by_hand = keepalive.socket_options(cfg)

    def hand_written() -> None:
        for level, option, value in by_hand:
            client.setsockopt(level, option, value)

    def with_library() -> None:
        keepalive.configure(client, cfg)

    with_library()  # the first call plans and proves the plan; steady state is what counts
    hand, ours = [], []
    for _ in range(rounds):
        hand.append(_per_call(hand_written, calls))
        ours.append(_per_call(with_library, calls))
    for sock in (server, client, accepted):
        sock.close()
    return statistics.median(hand), statistics.median(ours)


def _import_time(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return float(out)


def bench_import(rounds: int) -> tuple[float, float, float]:
    plain, ours, first_use = [], [], []
    for _ in range(rounds):
        plain.append(_import_time("socket"))
        ours.append(_import_time("socket, keepalive"))
        # Names load on first use: also show the cost of the first real call's imports.
        first_use.append(_import_time("socket, keepalive; keepalive.configure"))
    return statistics.median(plain), statistics.median(ours), statistics.median(first_use)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()

    hand, ours = bench_configure(args.rounds, args.calls)
    print(f"setsockopt by hand : {hand * 1e6:7.2f} us per socket")
    print(f"keepalive.configure: {ours * 1e6:7.2f} us per socket")
    print(f"configure ratio    : {ours / hand:.2f}x (goal <= 1.20x)")

    plain, with_lib, first_use = bench_import(args.rounds)
    extra_ms = (with_lib - plain) * 1e3
    print(f"import socket             : {plain * 1e3:6.2f} ms")
    print(f"import socket, keepalive  : {with_lib * 1e3:6.2f} ms")
    print(
        f"import cost ratio         : {with_lib / plain:.2f}x, +{extra_ms:.2f} ms (goal <= +5 ms)"
    )
    print(
        f"... and first use of keepalive.configure (loads the kernel layer): "
        f"+{(first_use - plain) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
