"""What `keepalive.configure()` costs against the four setsockopt calls a user writes by hand,
in steady state and on first use in a fresh process (issue #2).

The baseline is what a user writes instead, unrolled, with no user timeout::

    sock.setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1)
    sock.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, 60)
    sock.setsockopt(IPPROTO_TCP, TCP_KEEPINTVL, 10)
    sock.setsockopt(IPPROTO_TCP, TCP_KEEPCNT, 5)

- steady state: ``configure(sock, cfg)`` with one config reused, against those four lines, in
  this process. Goal: at most 1.10x, judged both for ``from keepalive import configure`` (the
  goal's own spelling) and for ``keepalive.configure(...)``, which pays about 2 % more for
  the attribute load on a package that defines ``__getattr__``.
- first use: a fresh ``python -c`` that runs ``import socket, keepalive`` and one
  ``configure()``, against one that runs ``import socket`` and the four lines. Timed inside
  the child (from before ``import socket`` to after the last call) for the extra milliseconds,
  and as the whole process (interpreter start-up included, what a CLI's user waits for) for
  the ratio. Goal: at most +3 ms. The children load modules from bytecode, as an installed
  package does (pip compiles it at install): they get a private PYTHONPYCACHEPREFIX, warmed
  once. ``--source`` also measures them with keepalive compiled from source in every process,
  as in a checkout run with PYTHONDONTWRITEBYTECODE=1, for information.

Both contenders run interleaved, alternating which goes first: in steady state ``--blocks``
short blocks of ``--calls`` calls each (short, so that a burst of other work on the machine
spoils a few blocks, not the result), on first use ``--rounds`` pairs of fresh processes. Each
ratio is the median of the per-block (per-round) ratios, shown with their interquartile range
and the range of all of them. Times are CPU time (user + system, the process's own:
``time.process_time()``, and ``getrusage`` for whole child processes) by default, which other
work on a shared machine inflates far less than wall-clock time; ``--clock wall`` uses
``time.perf_counter()`` and the children's elapsed time instead.

``--floor`` also times, in the same blocks, what configure()'s steady state cannot avoid,
step by step: being a function call, accepting configure()'s keywords (as parameters with
defaults, each tested; ``**options``, shown for comparison, costs more) and checking the
config, calling setsockopt with the cached tuples, and being looked up on a package whose
names load on first use (a module ``__getattr__``, PEP 562). configure() makes the same four
calls as the baseline, in another order: the TCP options first and SO_KEEPALIVE last, so that
a socket that is not TCP refuses the first call (keepalive.sockets); the script checks it.

    python benchmarks/configure.py [--blocks 300] [--calls 2000] [--rounds 21]
                                   [--clock cpu|wall] [--floor] [--source]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from socket import (  # Linux's names: the baseline is Linux's four calls
    IPPROTO_TCP,
    SO_KEEPALIVE,
    SOL_SOCKET,
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
)
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this checkout, whatever else is installed

import keepalive  # noqa: E402

STEADY_GOAL = 1.10  # x the hand-written calls
FIRST_USE_GOAL_MS = 3.0  # extra milliseconds in a fresh process

IDLE, INTERVAL, COUNT = 60, 10, 5
HAND_WRITTEN = [
    (SOL_SOCKET, SO_KEEPALIVE, 1),
    (IPPROTO_TCP, TCP_KEEPIDLE, IDLE),
    (IPPROTO_TCP, TCP_KEEPINTVL, INTERVAL),
    (IPPROTO_TCP, TCP_KEEPCNT, COUNT),
]

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def _summary(values: list[float]) -> str:
    """``median [q1 .. q3] (min .. max)``."""
    q1, median, q3 = statistics.quantiles(values, n=4)
    return f"{median:.3f}x [IQR {q1:.3f} .. {q3:.3f}; all {min(values):.3f} .. {max(values):.3f}]"


# -- steady state -----------------------------------------------------------------------------


def _connected_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    return server, client, accepted


def _by_hand(sock: socket.socket, calls: int, cfg: object = None) -> float:
    start = clock()
    for _ in range(calls):
        sock.setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1)
        sock.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, 60)
        sock.setsockopt(IPPROTO_TCP, TCP_KEEPINTVL, 10)
        sock.setsockopt(IPPROTO_TCP, TCP_KEEPCNT, 5)
    return (clock() - start) / calls


def _with_library(sock: socket.socket, calls: int, cfg: object) -> float:
    start = clock()
    for _ in range(calls):
        keepalive.configure(sock, cfg)  # type: ignore[arg-type]
    return (clock() - start) / calls


# --floor: what configure()'s steady state cannot avoid, step by step. Each step is one
# function, called as configure() is; the last ones are configure() itself, looked up three
# ways. _FLOOR holds the config and its four calls as keepalive.sockets caches them.
_FLOOR: list[object] = [None, (), (), (), (), None]


def _a_function(sock: socket.socket, cfg: object = None) -> None:
    sock.setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1)
    sock.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, 60)
    sock.setsockopt(IPPROTO_TCP, TCP_KEEPINTVL, 10)
    sock.setsockopt(IPPROTO_TCP, TCP_KEEPCNT, 5)


_UNSET = object()


def _keywords_and_config(  # noqa: PLR0917 - configure()'s parameters
    sock: socket.socket,
    cfg: object = None,
    _more: object = _UNSET,
    strict: bool = True,
    idle: float | None = None,
    interval: float | None = None,
    count: int | None = None,
    user_timeout: float | None = None,
    platform: object = None,
) -> None:
    # configure()'s keywords as parameters with defaults, each tested, and the config check
    if (
        idle is None
        and interval is None
        and count is None
        and user_timeout is None
        and platform is None
        and strict is True
        and _more is _UNSET
        and cfg is _FLOOR[0]
    ):
        sock.setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1)
        sock.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, 60)
        sock.setsockopt(IPPROTO_TCP, TCP_KEEPINTVL, 10)
        sock.setsockopt(IPPROTO_TCP, TCP_KEEPCNT, 5)


def _cached_calls(  # noqa: PLR0917 - configure()'s parameters
    sock: socket.socket,
    cfg: object = None,
    _more: object = _UNSET,
    strict: bool = True,
    idle: float | None = None,
    interval: float | None = None,
    count: int | None = None,
    user_timeout: float | None = None,
    platform: object = None,
) -> object:
    # ... with configure()'s cached tuples: one bound method, no argument tuple per call
    if (
        idle is None
        and interval is None
        and count is None
        and user_timeout is None
        and platform is None
        and strict is True
        and _more is _UNSET
    ):
        config, first, second, third, fourth, applied = _FLOOR
        if cfg is config:
            setsockopt = sock.setsockopt
            setsockopt(*first)  # type: ignore[misc]
            setsockopt(*second)  # type: ignore[misc]
            setsockopt(*third)  # type: ignore[misc]
            setsockopt(*fourth)  # type: ignore[misc]
            return applied
    return None


def _keywords_as_a_dictionary(sock: socket.socket, cfg: object = None, **options: object) -> object:
    # for comparison: the keywords as **options (one test), which CPython cannot specialise
    config, first, second, third, fourth, applied = _FLOOR
    if cfg is config and not options:
        setsockopt = sock.setsockopt
        setsockopt(*first)  # type: ignore[misc]
        setsockopt(*second)  # type: ignore[misc]
        setsockopt(*third)  # type: ignore[misc]
        setsockopt(*fourth)  # type: ignore[misc]
        return applied
    return None


FLOOR_STEPS: dict[str, Callable[..., object]] = {
    "a function making the 4 calls": _a_function,
    "+ keyword parameters, config check": _keywords_and_config,
    "+ cached calls (configure's steady state)": _cached_calls,
    "  (the same with **options instead)": _keywords_as_a_dictionary,
}
# configure() called as a global, and as an attribute of a module without __getattr__: CPython
# specialises attribute loads on modules, except on a module that defines __getattr__, as the
# keepalive package does to load its names on first use.
_PLAIN_MODULE = types.ModuleType("plain")


def _imported_by_name(sock: socket.socket, calls: int, cfg: object) -> float:
    configure = keepalive.configure  # `from keepalive import configure`
    start = clock()
    for _ in range(calls):
        configure(sock, cfg)  # type: ignore[arg-type]
    return (clock() - start) / calls


def _plain_module_attribute(sock: socket.socket, calls: int, cfg: object) -> float:
    plain = _PLAIN_MODULE
    start = clock()
    for _ in range(calls):
        plain.configure(sock, cfg)
    return (clock() - start) / calls


def _step(step: Callable[..., object]) -> Callable[[socket.socket, int, object], float]:
    def timed(sock: socket.socket, calls: int, cfg: object) -> float:
        start = clock()
        for _ in range(calls):
            step(sock, cfg)
        return (clock() - start) / calls

    return timed


class _Recording(socket.socket):
    calls: list[tuple[int, int, int]]

    def setsockopt(self, *args: Any) -> None:
        self.calls.append(args)
        super().setsockopt(*args)


def _check_same_calls(cfg: keepalive.KeepaliveConfig) -> None:
    """The comparison is fair only if configure() makes the hand-written calls, no more: the
    same four (in another order), on the checked path and in the steady state."""
    server = socket.create_server(("127.0.0.1", 0))
    with server:
        for _ in range(2):
            with _Recording() as sock:
                sock.calls = []
                sock.connect(server.getsockname())
                keepalive.configure(sock, cfg)
                assert sorted(sock.calls) == sorted(HAND_WRITTEN), sock.calls


def bench_steady(blocks: int, calls: int, floor: bool) -> dict[str, list[float]]:
    """Per-block seconds per socket, by contender ("by hand" first, "configure" last)."""
    cfg = keepalive.KeepaliveConfig(idle=IDLE, interval=INTERVAL, count=COUNT)
    _check_same_calls(cfg)
    server, client, accepted = _connected_pair()
    _FLOOR[:] = [cfg, *keepalive.socket_options(cfg), object()]
    _PLAIN_MODULE.configure = keepalive.configure  # type: ignore[attr-defined]
    contenders: dict[str, Callable[[socket.socket, int, object], float]] = {"by hand": _by_hand}
    if floor:
        contenders.update({name: _step(step) for name, step in FLOOR_STEPS.items()})
        contenders["configure on a module without __getattr__"] = _plain_module_attribute
    contenders["configure"] = _imported_by_name  # as the goal is written: configure(sock, cfg)
    contenders["keepalive.configure"] = _with_library
    times: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        keepalive.configure(client, cfg)  # the first call plans and proves the plan
        for run in contenders.values():  # warm up
            run(client, calls, cfg)
        order = list(contenders.items())
        for index in range(blocks):
            for name, run in order if index % 2 else order[::-1]:
                times[name].append(run(client, calls, cfg))
    finally:
        for sock in (server, client, accepted):
            sock.close()
    return times


# -- first use in a fresh process -------------------------------------------------------------

_CHILD_BY_HAND = (
    "import time; t = time.{clock}(); import socket; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1); "
    f"s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, {IDLE}); "
    f"s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, {INTERVAL}); "
    f"s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, {COUNT}); "
    "print(time.{clock}() - t)"
)
_CHILD_WITH_LIBRARY = (
    "import time; t = time.{clock}(); import socket, keepalive; s = socket.socket(); "
    f"keepalive.configure(s, keepalive.KeepaliveConfig(idle={IDLE}, interval={INTERVAL}, "
    f"count={COUNT})); "
    "print(time.{clock}() - t)"
)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _child(code: str, env: dict[str, str]) -> tuple[float, float]:
    """(seconds inside the child, seconds for the whole process), on the chosen clock."""
    name = "process_time" if clock is time.process_time else "perf_counter"
    cpu, wall = _children_cpu(), time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code.replace("{clock}", name)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    ).stdout
    whole = _children_cpu() - cpu if clock is time.process_time else time.perf_counter() - wall
    return float(out), whole


def bench_first_use(rounds: int, env: dict[str, str]) -> dict[str, list[float]]:
    _child(_CHILD_BY_HAND, env)  # warm the bytecode cache (and the page cache)
    _child(_CHILD_WITH_LIBRARY, env)
    runs: dict[str, list[float]] = {"hand": [], "ours": [], "hand_process": [], "ours_process": []}
    for index in range(rounds):
        order = [("hand", _CHILD_BY_HAND), ("ours", _CHILD_WITH_LIBRARY)]
        for name, code in order if index % 2 == 0 else order[::-1]:
            inside, process = _child(code, env)
            runs[name].append(inside)
            runs[f"{name}_process"].append(process)
    return runs


def _child_env(*, bytecode: bool, cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if bytecode:
        env["PYTHONPYCACHEPREFIX"] = cache  # private: the checkout gets no __pycache__
    else:
        # As a checkout runs under PYTHONDONTWRITEBYTECODE=1: the standard library loads from
        # its bytecode, keepalive is compiled from source in every process.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _report_first_use(label: str, runs: dict[str, list[float]], goal: bool) -> None:
    extra_ms = [(o - h) * 1e3 for h, o in zip(runs["hand"], runs["ours"], strict=True)]
    inside = [o / h for h, o in zip(runs["hand"], runs["ours"], strict=True)]
    whole = [o / h for h, o in zip(runs["hand_process"], runs["ours_process"], strict=True)]
    q1, extra, q3 = statistics.quantiles(extra_ms, n=4)
    verdict = ""
    if goal:
        verdict = "  met" if extra <= FIRST_USE_GOAL_MS else "  NOT met"
    goal_text = f"(goal <= +{FIRST_USE_GOAL_MS:g} ms){verdict}" if goal else "(information)"
    hand, hand_whole = (statistics.median(runs[key]) * 1e3 for key in ("hand", "hand_process"))
    ours, ours_whole = (statistics.median(runs[key]) * 1e3 for key in ("ours", "ours_process"))
    print(f"first use, {label}:")
    print(
        f"  by hand (import socket, 4 calls) : {hand:6.2f} ms in the child, {hand_whole:.1f} whole"
    )
    print(
        f"  import keepalive + configure()   : {ours:6.2f} ms in the child, {ours_whole:.1f} whole"
    )
    print(
        f"  extra                            : {extra:+.2f} ms [IQR {q1:+.2f} .. {q3:+.2f}]",
        goal_text,
    )
    print(f"  ratio in the child               : {_summary(inside)}")
    print(f"  ratio of whole processes         : {_summary(whole)}")


# The goal, "configure(sock, cfg) <= 1.1x", judged on both ways of calling it.
STEADY_LABELS = {
    "configure": "configure(sock, cfg) [from keepalive import]",
    "keepalive.configure": "keepalive.configure(sock, cfg)",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=300, help="steady state: blocks of calls")
    parser.add_argument("--calls", type=int, default=2000, help="steady state: calls per block")
    parser.add_argument("--rounds", type=int, default=21, help="first use: pairs of processes")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument(
        "--floor", action="store_true", help="also time the steps configure() cannot avoid"
    )
    parser.add_argument(
        "--source", action="store_true", help="also time first use compiling from source"
    )
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    source = Path(keepalive.__file__).parent
    print(f"clock: {args.clock} time ({clock.__name__}); keepalive from {source}")

    times = bench_steady(args.blocks, args.calls, args.floor)
    hand = times.pop("by hand")
    print(f"steady state, {args.blocks} blocks of {args.calls} calls each (us per socket):")
    print(f"  {'4 setsockopt by hand':46s}: {statistics.median(hand) * 1e6:6.3f}")
    for name, ours in times.items():
        ratios = [o / h for h, o in zip(hand, ours, strict=True)]
        label = STEADY_LABELS.get(name, name)
        line = f"  {label:46s}: {statistics.median(ours) * 1e6:6.3f}, ratio {_summary(ratios)}"
        if name in STEADY_LABELS:
            verdict = "met" if statistics.median(ratios) <= STEADY_GOAL else "NOT met"
            line += f" (goal <= {STEADY_GOAL:.2f}x)  {verdict}"
        print(line)
    print(
        "  (keepalive.configure pays ~2 % more for the attribute load: CPython does not"
        " specialise it on a module that defines __getattr__)"
    )

    with tempfile.TemporaryDirectory(prefix="keepalive-bench-pyc-") as cache:
        runs = bench_first_use(args.rounds, _child_env(bytecode=True, cache=cache))
        _report_first_use(f"{args.rounds} fresh processes each, bytecode cached", runs, True)
        if args.source:
            if any(ROOT.joinpath("keepalive").rglob("__pycache__")):
                print("(keepalive/ holds __pycache__ directories: --source measures them)")
            runs = bench_first_use(args.rounds, _child_env(bytecode=False, cache=cache))
            _report_first_use("keepalive compiled from source (no bytecode)", runs, False)


if __name__ == "__main__":
    main()
