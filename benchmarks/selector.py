"""What keepalive.sync's selector mode (``monitor(..., mode="selector")``) costs and saves.

Two measurements, each contender in turn and the order flipped every run:

* **1,000 idle monitored sockets, a reader thread each blocked in ``recv``**, heartbeat at
  1 Hz against a responder process (PING -> PONG): the client process's CPU per beat for a
  heartbeat thread per socket (the baseline of issue 14's row), keepalive.sync's default
  mode and its selector mode. Goal: selector mode <= 0.25x the thread per socket.
* **the latency cost per application message**: a 100-byte request line and its echo
  (``sendall`` then ``recv``), selector mode against the default mode on the same kind of
  connection to an echo process: wall-clock time and client CPU per round trip. No goal:
  the extra hand-off from the watcher thread to the reader is the price of the mode.

Prints each row's ratio, its limit and PASS/FAIL, then medians and spreads over ``--runs``.
The responder and echo processes are heartbeat.py's and datapath.py's.

    python benchmarks/selector.py [--runs 3] [--json PATH]
    python benchmarks/selector.py --quick        # a smoke run, about 15 s
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Literal, TypeAlias

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _measure, heartbeat, datapath
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # measure this checkout
from _measure import (
    Report,
    add_run_arguments,
    add_window_arguments,
    finish,
    positive_int,
    raise_nofile,
)
from datapath import BEAT, MESSAGE, PING, PONG, Peer, _connect, _round_trips
from heartbeat import (
    BLOCKING_SELECTOR_LIMIT,
    Responders,
    Window,
    _sync_window,
    _thousands,
    _threads_window,
)

from keepalive import sync
from keepalive.heartbeat import HeartbeatConfig

SELECTOR: dict[str, object] = {"mode": "selector"}
Mode: TypeAlias = Literal["default", "selector"]


def _beats(
    report: Report, address: tuple[str, int], count: int, beat: HeartbeatConfig, duration: float
) -> None:
    contenders = ["threads", "default", "selector"]
    if report.runs % 2 == 0:
        contenders.reverse()
    windows: dict[str, Window] = {}
    for name in contenders:
        if name == "threads":
            windows[name] = _threads_window(address, count, beat, duration)
        else:
            options: dict[str, object] = SELECTOR if name == "selector" else {}
            windows[name], _ = _sync_window(
                address, count, beat, duration, options=options, trace=False
            )
    threads = windows["threads"].us_per_beat
    label = f"blocking {_thousands(count)} at {1 / beat.interval:g} Hz"
    for name, limit in (("selector", BLOCKING_SELECTOR_LIMIT), ("default", None)):
        window = windows[name]
        report.row(
            f"{label}, {name} mode",
            contender=f"keepalive.sync {name} mode, a reader thread per socket",
            baseline="a heartbeat thread per socket, a reader thread per socket",
            limit=limit,
            loop=None,
            ratio=window.us_per_beat / threads,
            value=window.us_per_beat,
            unit="µs CPU per beat",
            detail=f"{window.us_per_beat:.2f} µs/beat ({window.beats} beats), "
            f"threads {threads:.2f}",
        )
    selector, default = windows["selector"].us_per_beat, windows["default"].us_per_beat
    report.row(
        f"{label}, selector / default mode",
        contender="keepalive.sync selector mode",
        baseline="keepalive.sync default mode",
        limit=None,
        loop=None,
        ratio=selector / default,
        value=selector,
        unit="µs CPU per beat",
        detail=f"{selector:.2f} vs {default:.2f} µs/beat",
    )


def _round_trip_block(sock: sync.MonitoredSocket, count: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) per round trip over ``count`` round trips."""
    wall, cpu = time.perf_counter(), time.process_time()
    _round_trips(sock, count)
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


def _latency(report: Report, address: tuple[str, int], trips: int, blocks: int) -> None:
    modes: tuple[Mode, ...] = ("default", "selector")
    socks = {
        mode: sync.monitor(
            _connect(address, b"echo\n"), heartbeat=BEAT, ping=PING, pong=PONG, mode=mode
        )
        for mode in modes
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in socks}
    try:
        for sock in socks.values():
            _round_trips(sock, trips // 4)  # warm up
        for block in range(blocks):
            order = list(socks) if block % 2 == 0 else list(reversed(socks))
            for name in order:
                samples[name].append(_round_trip_block(socks[name], trips))
    finally:
        for sock in socks.values():
            sock.close()
    walls = {name: statistics.median(wall for wall, _ in pairs) for name, pairs in samples.items()}
    cpus = {name: statistics.median(cpu for _, cpu in pairs) for name, pairs in samples.items()}
    for what, figures in (("latency", walls), ("CPU", cpus)):
        report.row(
            f"round trip {len(MESSAGE)} B, selector mode, {what}",
            contender="keepalive.sync selector mode",
            baseline="keepalive.sync default mode",
            limit=None,
            loop=None,
            ratio=figures["selector"] / figures["default"],
            value=figures["selector"] * 1e6,
            unit=f"µs {what} per round trip",
            detail=f"{figures['selector'] * 1e6:.1f} µs vs {figures['default'] * 1e6:.1f} µs "
            f"per round trip ({blocks} blocks of {trips})",
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_window_arguments(parser)
    parser.add_argument("--round-trips", type=positive_int, default=2000, help="per block")
    parser.add_argument("--blocks", type=positive_int, default=6, help="round-trip blocks")
    add_run_arguments(
        parser,
        runs=3,
        quick_help="a smoke run (50 sockets, short windows, 4 Hz): checks the script, not speed",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sockets, args.duration, args.interval = 50, 0.6, 0.25
        args.round_trips, args.blocks, args.runs = 200, 2, 1
    beat = HeartbeatConfig(interval=args.interval, timeout=max(10.0, args.interval * 4))
    raise_nofile(args.sockets * 2 + 256)
    report = Report("selector")
    responders, peer = Responders(), Peer()
    started = time.monotonic()
    try:
        for run in range(args.runs):
            report.runs = run + 1
            print(f"== run {run + 1}/{args.runs}", flush=True)
            _beats(report, responders.address, args.sockets, beat, args.duration)
            _latency(report, peer.address, args.round_trips, args.blocks)
    finally:
        responders.close()
        peer.close()
    finish(report, started, args.json)
    failed = [
        row.name
        for row in report.rows.values()
        if row.limit is not None and statistics.median(row.ratios) > row.limit
    ]
    print(f"FAIL: {', '.join(failed)}" if failed else "PASS: every goal met")


if __name__ == "__main__":
    main()
