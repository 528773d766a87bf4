"""What the benchmarks share: the report (rows, series, runs, the JSON the docs' charts are
drawn from), the command line's common arguments, CPU pinning, and the server process the
client measures against (heartbeat.py's responder, datapath.py's peer)."""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import selectors
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# -- rows, runs and the report ---------------------------------------------------------------------


@dataclass
class Row:
    """One line of an issue table: a contender against its baseline, one sample per run."""

    name: str
    contender: str
    baseline: str
    limit: float | None  # None: reported, no goal
    loop: str | None
    ratios: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)  # the contender's own figure, per run
    unit: str = ""  # of ``value``


@dataclass
class Series:
    name: str
    x_label: str
    y_label: str
    loop: str | None
    points: dict[float, list[float]] = field(default_factory=dict)  # x -> one y per run


class Report:
    """The rows and series of one benchmark, gathered over runs."""

    def __init__(self, benchmark: str) -> None:
        self.benchmark = benchmark
        self.rows: dict[str, Row] = {}
        self.series: dict[str, Series] = {}
        self.notes: list[str] = []
        self.runs = 0

    def row(
        self,
        name: str,
        *,
        contender: str,
        baseline: str,
        limit: float | None,
        loop: str | None,
        ratio: float,
        value: float | None = None,
        unit: str = "",
        detail: str = "",
    ) -> None:
        row = self.rows.setdefault(name, Row(name, contender, baseline, limit, loop, unit=unit))
        row.ratios.append(ratio)
        if value is not None:
            row.value.append(value)
        print(f"  {name:<52} {ratio:7.3f}x  {_verdict(ratio, limit):<14} {detail}", flush=True)

    def point(
        self, name: str, *, x_label: str, y_label: str, loop: str | None, x: float, y: float
    ) -> None:
        series = self.series.setdefault(name, Series(name, x_label, y_label, loop))
        series.points.setdefault(x, []).append(y)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
        print(f"  {text}", flush=True)

    def summary(self) -> None:
        print(f"\n== {self.benchmark}: medians of {self.runs} run(s), spread min-max")
        for row in self.rows.values():
            ratio = statistics.median(row.ratios)
            spread = f"{min(row.ratios):.3f}-{max(row.ratios):.3f}"
            limit = "no goal" if row.limit is None else f"limit <= {row.limit:g}x"
            value = ""
            if row.value:
                value = f"  ({statistics.median(row.value):.4g} {row.unit})"
            print(
                f"  {row.name:<52} {ratio:7.3f}x  [{spread}]  {limit:<15} "
                f"{_verdict(ratio, row.limit)}{value}"
            )
            print(f"      {row.contender} / {row.baseline}")
        for series in self.series.values():
            points = ", ".join(
                f"{x:g}: {statistics.median(ys):.3g}" for x, ys in sorted(series.points.items())
            )
            print(f"  {series.name} ({series.y_label}): {points}")
        for text in self.notes:
            print(f"  note: {text}")

    def as_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "machine": {
                "cpus": os.cpu_count() or 1,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "runs": self.runs,
            "rows": [
                {
                    "name": row.name,
                    "contender": row.contender,
                    "baseline": row.baseline,
                    "ratio": round(statistics.median(row.ratios), 4),
                    "spread": [round(min(row.ratios), 4), round(max(row.ratios), 4)],
                    "limit": row.limit,
                    "loop": row.loop,
                    # Beyond the agreed schema: the contender's own figure (median), if any.
                    **(
                        {"value": round(statistics.median(row.value), 4), "unit": row.unit}
                        if row.value
                        else {}
                    ),
                }
                for row in self.rows.values()
            ],
            "series": [
                {
                    "name": series.name,
                    "x_label": series.x_label,
                    "y_label": series.y_label,
                    "points": [
                        [x, round(statistics.median(ys), 4)]
                        for x, ys in sorted(series.points.items())
                    ],
                    "loop": series.loop,
                }
                for series in self.series.values()
            ],
            "notes": self.notes,
        }

    def write_json(self, path: str) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.as_json(), indent=2, ensure_ascii=False) + "\n")
        print(f"\nwrote {target}")


def _verdict(ratio: float, limit: float | None) -> str:
    if limit is None:
        return "(no goal)"
    return "PASS" if ratio <= limit else "FAIL"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def pin_cpu(which: int) -> str:
    """Pin this process to one of the CPUs it may use (``0``: the first, ``-1``: the last),
    where the OS allows it (Linux) and there are two or more; says what it did.

    The client runs on the last CPU, the peer process on the first: a peer on the same CPU
    as the client (as the scheduler sometimes places it, for a whole transfer) makes the
    client's copies hit a warm cache, and the client's CPU time is bimodal then (a plain
    256 MiB recv_into measured 28-35 ms or 77-86 ms per transfer, run to run)."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    os.sched_setaffinity(0, {cpus[which]})
    return f"pinned to CPU {cpus[which]}"


@contextlib.contextmanager
def all_cpus() -> Iterator[None]:
    """Lift :func:`pin_cpu` meanwhile: the blocking rows run a thousand threads, and pinned to
    one CPU their wake-ups and GIL hand-offs never cross CPUs, which no deployment on several
    CPUs sees (the thread-per-socket baseline measured 43 µs per beat pinned, 95-130 not)."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, _CPUS_AT_START)
    try:
        yield
    finally:
        os.sched_setaffinity(0, pinned)


_CPUS_AT_START: set[int] = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()


def raise_nofile(needed: int) -> None:
    """Raise the soft open-file limit to the hard one; refuse a run that cannot fit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise SystemExit(
            f"error: {needed} open files needed, but the hard limit (ulimit -Hn) is {hard}"
        )


# -- the command line ------------------------------------------------------------------------------


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sockets``, ``--duration`` and ``--interval``: the heartbeat windows' sizes."""
    parser.add_argument("--sockets", type=positive_int, default=1000, help="blocking sockets")
    parser.add_argument(
        "--duration", type=positive_float, default=5.0, help="measured seconds per window"
    )
    parser.add_argument(
        "--interval", type=positive_float, default=1.0, help="seconds between beats"
    )


def add_run_arguments(parser: argparse.ArgumentParser, *, runs: int, quick_help: str) -> None:
    """``--runs``, ``--json`` and ``--quick``."""
    parser.add_argument("--runs", type=positive_int, default=runs, help="repeat; print medians")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--quick", action="store_true", help=quick_help)


def finish(report: Report, started: float, json_path: str | None) -> None:
    """Print the summary and the seconds since ``started``; write the JSON if asked to."""
    report.summary()
    print(f"  ({time.monotonic() - started:.0f} s)")
    if json_path:
        report.write_json(json_path)


# -- the server process ----------------------------------------------------------------------------


class ServerProcess:
    """A server in a process of its own, ``serve(report_port)``, which sends its port through
    ``report_port``: spawned, not forked, so that the client's first writes to its own memory
    are not copy-on-write faults charged to the first measured window or block."""

    def __init__(self, serve: Callable[[Connection], None], what: str) -> None:
        context = multiprocessing.get_context("spawn")
        port_in, port_out = context.Pipe(duplex=False)
        self.process = context.Process(target=serve, args=(port_out,), daemon=True)
        self.process.start()
        port_out.close()
        if not port_in.poll(30):
            self.process.kill()
            raise RuntimeError(f"the {what} process did not start within 30 s")
        self.address: tuple[str, int] = ("127.0.0.1", port_in.recv())
        port_in.close()

    def close(self) -> None:
        self.process.kill()
        self.process.join()


def listen(report_port: Connection, backlog: int) -> tuple[socket.socket, selectors.BaseSelector]:
    """In a server process: pin it to the first CPU (the client takes the last), listen on
    127.0.0.1 (non-blocking, registered for reading with a new selector) and report the port."""
    pin_cpu(0)
    listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
    selector = selectors.DefaultSelector()
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ)
    report_port.send(listener.getsockname()[1])
    report_port.close()
    return listener, selector


def events_while_parent_lives(
    selector: selectors.BaseSelector,
) -> Iterator[tuple[selectors.SelectorKey, int]]:
    """The selector's events, until the client that started this process is gone (killed)."""
    parent = os.getppid()
    while os.getppid() == parent:
        yield from selector.select(timeout=1.0)
