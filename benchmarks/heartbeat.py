"""What a heartbeat costs: keepalive's drivers against the bare-I/O floor and the thread pattern.

Every row of issue 14's heartbeat table, measured in one run against one responder process
(PING -> PONG, in a child process: its CPU stays out of the client's figure):

* **asyncio, N connections at 1 Hz** (default 10,000), client CPU per beat, against the
  **bare-I/O floor**: one timer per loop writes PING to every transport, a bare
  ``asyncio.Protocol`` counts the PONGs, no logic at all. The same on **uvloop**, against
  the floor on uvloop; **trio** through ``benchmarks/_trio_contenders.py`` when present.
* **scaling**: keepalive's CPU per beat at 1k, 2.5k, 5k and 10k connections (and the
  floor's), on each loop; the row is the largest over the smallest (flat within 15 %).
* **blocking, 1,000 sockets with a reader thread each** (the application's, blocked in
  ``recv``), keepalive.sync against a heartbeat thread per socket; and keepalive.sync's
  opt-in selector mode when this checkout has one.
* **memory per monitor**, asyncio and blocking (tracemalloc, what making the monitors left
  allocated), against the goals in bytes.

A beat counts when its pong arrived. CPU is the client process's own (``time.process_time``),
over windows of the same length for each contender, cut into one-interval slices: a
contender's figure is its median slice's CPU per beat. Contenders alternate (their order
flips every run), so load from other work on the machine falls on both; the client is pinned
to one CPU and the responder to another for the event-loop rows (see :func:`pin_cpu`). Each
row prints its ratio, its limit from the issue and PASS/FAIL; ``--runs N`` repeats
everything and prints medians and spreads (min-max); ``--json PATH`` writes the rows and
series for the docs' charts (docs/benchmarks.md says what each row measures).

    python benchmarks/heartbeat.py [--runs 5] [--json docs/data/bench-heartbeat.json]
    python benchmarks/heartbeat.py --quick        # a smoke run, about 15 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import inspect
import os
import selectors
import socket
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this checkout, whatever else is installed
sys.path.insert(0, str(ROOT / "benchmarks"))  # _measure.py: what the benchmarks share

from _measure import (  # noqa: E402
    Report,
    ServerProcess,
    add_run_arguments,
    add_window_arguments,
    all_cpus,
    events_while_parent_lives,
    finish,
    listen,
    pin_cpu,
    raise_nofile,
)

from keepalive import aio, sync  # noqa: E402
from keepalive.heartbeat import HeartbeatConfig  # noqa: E402

PING, PONG = b"PING\n", b"PONG\n"
TRIO_CONTENDERS = Path(__file__).resolve().parent / "_trio_contenders.py"
# Goals of issue 14 (ratios; memory in bytes per monitor).
ASYNC_FLOOR_LIMIT = 1.05
SCALING_LIMIT = 1.15
BLOCKING_SELECTOR_LIMIT = 0.25
ASYNC_MONITOR_BYTES = 512
BLOCKING_MONITOR_BYTES = 640


# -- the responder process -------------------------------------------------------------------------


def _responder(report_port: Connection) -> None:
    """Answer every PING line with PONG on every accepted connection, until killed."""
    raise_nofile(0)
    listener, selector = listen(report_port, backlog=4096)
    pending: dict[socket.socket, bytes] = {}
    for key, _mask in events_while_parent_lives(selector):
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        if sock is listener:
            while True:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    break
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ)
                pending[conn] = b""
            continue
        try:
            data = sock.recv(65536)
        except ConnectionError:
            data = b""
        if not data:
            selector.unregister(sock)
            pending.pop(sock, None)
            sock.close()
            continue
        buffered = pending[sock] + data
        lines = buffered.count(b"\n")
        pending[sock] = buffered[buffered.rfind(b"\n") + 1 :]
        if lines:
            with contextlib.suppress(OSError):  # gone: its end of stream comes next
                sock.send(PONG * lines)


class Responders(ServerProcess):
    """The responder, in a process of its own (see :class:`ServerProcess`)."""

    def __init__(self) -> None:
        super().__init__(_responder, "responder")


# -- measuring -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    """One run's setting, shared by each of its measurements."""

    address: tuple[str, int]  # the responder's
    beat: HeartbeatConfig
    duration: float  # measured seconds per contender's window
    keepalive_first: bool  # the contenders' order, flipped every run


@dataclass
class Window:
    """What a contender did in one measured window, slice by slice."""

    beats: int
    cpu: float  # CPU seconds of the client process, the whole window
    slices: list[float] = field(default_factory=list)  # µs CPU per beat in each slice

    @property
    def us_per_beat(self) -> float:
        """The median slice's CPU per beat: a burst of load from other work on the machine
        falls in one slice or two, not in the figure (the whole window's mean: ``mean_us``)."""
        if not self.slices:
            return self.mean_us
        return statistics.median(self.slices)

    @property
    def mean_us(self) -> float:
        return self.cpu / max(1, self.beats) * 1e6


class _Slicer:
    """Cuts a window into slices of one beat interval each and measures every slice: the
    client's CPU and the beats counted, the counting itself left out of the CPU."""

    def __init__(self, count_beats: Callable[[], int], duration: float, interval: float) -> None:
        self.count_beats = count_beats
        self.slice_count = max(1, round(duration / interval))
        self.slice_length = duration / self.slice_count
        self.slices: list[float] = []
        self.beats = 0
        self.cpu = 0.0
        self._beats = count_beats()
        self._cpu = time.process_time()

    def cut(self) -> None:
        cpu = time.process_time() - self._cpu
        beats = self.count_beats()
        self._cpu = time.process_time()  # (counting 10,000 monitors is not their cost)
        self.slices.append(cpu / max(1, beats - self._beats) * 1e6)
        self.cpu += cpu
        self.beats += beats - self._beats
        self._beats = beats

    def window(self) -> Window:
        return Window(self.beats, self.cpu, self.slices)

    async def run_async(self) -> Window:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(1, self.slice_count + 1):
            await asyncio.sleep(max(0.0, start + index * self.slice_length - loop.time()))
            self.cut()
        return self.window()

    def run(self) -> Window:
        start = time.monotonic()
        for index in range(1, self.slice_count + 1):
            time.sleep(max(0.0, start + index * self.slice_length - time.monotonic()))
            self.cut()
        return self.window()


def _traced(make: Callable[[], object]) -> tuple[object, int]:
    """Run ``make`` and return what it built and the bytes it left allocated."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    built = make()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return built, after - before


def _warm_up(interval: float) -> float:
    """Seconds before a window opens: the first beats went out and their pongs came back."""
    return interval + min(0.5, interval)


def _thousands(count: int) -> str:
    if count >= 1000 and count % 100 == 0:
        return f"{count / 1000:g}k"
    return str(count)


def _per_beat_row(
    report: Report,
    name: str,
    *,
    contender: str,
    baseline: str,
    limit: float | None,
    loop: str | None,
    ours: Window,
    theirs: Window,
    detail: str,
) -> None:
    """A row of CPU per beat: ``ours`` against the baseline's window, ``theirs``."""
    report.row(
        name,
        contender=contender,
        baseline=baseline,
        limit=limit,
        loop=loop,
        ratio=ours.us_per_beat / theirs.us_per_beat,
        value=ours.us_per_beat,
        unit="µs CPU per beat",
        detail=detail,
    )


def _memory_row(
    report: Report,
    name: str,
    *,
    contender: str,
    goal: int,
    loop: str | None,
    measured: float,
    detail: str,
) -> None:
    """A row of bytes per monitor against the goal in bytes (limit 1: at most the goal)."""
    report.row(
        name,
        contender=contender,
        baseline=f"goal, {goal} B",
        limit=1.0,
        loop=loop,
        ratio=measured / goal,
        value=measured,
        unit="B per monitor",
        detail=detail,
    )


def _flatness_row(
    report: Report,
    name: str,
    *,
    contender: str,
    limit: float | None,
    loop: str,
    per_beat: dict[int, float],
) -> None:
    """How flat CPU per beat stays over the sizes: the most over the least."""
    report.row(
        name,
        contender=contender,
        baseline="least CPU per beat over the sizes",
        limit=limit,
        loop=loop,
        ratio=max(per_beat.values()) / min(per_beat.values()),
        detail=", ".join(f"{_thousands(n)}: {v:.2f} µs" for n, v in per_beat.items()),
    )


# -- asyncio and uvloop ----------------------------------------------------------------------------


class _FloorProtocol(asyncio.Protocol):
    """The floor's receiving side: counts pongs, nothing else."""

    __slots__ = ("_pongs",)

    def __init__(self, pongs: list[int]) -> None:
        self._pongs = pongs

    def data_received(self, data: bytes) -> None:
        self._pongs[0] += len(data) // len(PONG)


class _Sink(asyncio.Protocol):
    """The application's protocol behind keepalive's monitor (the pongs never reach it)."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        pass


async def _connect_many(
    address: tuple[str, int], count: int, factory: Callable[[], asyncio.Protocol]
) -> list[asyncio.Transport]:
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    for start in range(0, count, 500):
        batch = [loop.create_connection(factory, *address) for _ in range(min(500, count - start))]
        for transport, _protocol in await asyncio.gather(*batch):
            transports.append(transport)
    return transports


async def _close_all(transports: list[asyncio.Transport]) -> None:
    for transport in transports:
        transport.close()
    await asyncio.sleep(0.1)  # connection_lost callbacks run before the next warm-up


async def _floor_window(
    address: tuple[str, int], count: int, interval: float, duration: float
) -> Window:
    """The bare-I/O floor: one timer per loop writes PING to every transport."""
    loop = asyncio.get_running_loop()
    pongs = [0]
    transports = await _connect_many(address, count, lambda: _FloorProtocol(pongs))
    handle: asyncio.TimerHandle | None = None

    def tick(when: float) -> None:
        nonlocal handle
        for transport in transports:
            transport.write(PING)
        following = when + interval
        while following <= loop.time():  # late: skip the beats missed, no burst to catch up
            following += interval
        handle = loop.call_at(following, tick, following)

    first = loop.time() + interval
    handle = loop.call_at(first, tick, first)
    await asyncio.sleep(_warm_up(interval))  # the first beat went out and came back
    window = await _Slicer(lambda: pongs[0], duration, interval).run_async()
    handle.cancel()
    await _close_all(transports)
    return window


async def _keepalive_window(
    address: tuple[str, int], count: int, beat: HeartbeatConfig, duration: float, trace: bool
) -> tuple[Window, float | None]:
    """keepalive.aio.monitor on every connection; returns the window and, if ``trace``, the
    bytes per monitor that making the monitors left allocated."""
    transports = await _connect_many(address, count, _Sink)

    def start_monitors() -> list[aio.HeartbeatProtocol]:
        return [aio.monitor(t, heartbeat=beat, ping=PING, pong=PONG) for t in transports]

    if trace:
        built, monitor_bytes = _traced(start_monitors)
        monitors: list[aio.HeartbeatProtocol] = built  # type: ignore[assignment]
        per_monitor: float | None = monitor_bytes / count
    else:
        monitors, per_monitor = start_monitors(), None
    await asyncio.sleep(_warm_up(beat.interval))
    window = await _Slicer(
        lambda: sum(m.pongs_received for m in monitors), duration, beat.interval
    ).run_async()
    dead = sum(m.dead for m in monitors)
    await _close_all(transports)
    if dead:
        raise RuntimeError(f"{dead} of {count} monitors declared their peer dead: overloaded?")
    return window, per_monitor


async def _warm_up_process(address: tuple[str, int], count: int, beat: HeartbeatConfig) -> None:
    """Both contenders once, unmeasured: the first window of a process measured up to twice
    the CPU per beat of every later one (the floor at 1,000 connections: 25-32 µs, against
    12-15 µs later in the same runs), whichever contender it held."""
    await _floor_window(address, count, beat.interval, beat.interval * 2)
    await _keepalive_window(address, count, beat, beat.interval * 2, trace=False)


def _run_on(loop_name: str, coroutine: Coroutine[Any, Any, Any]) -> Any:
    loop: asyncio.AbstractEventLoop
    if loop_name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def _measure_loop(report: Report, setting: _Setting, loop_name: str, sizes: list[int]) -> None:
    address, beat, duration = setting.address, setting.beat, setting.duration
    hz = f"{1 / beat.interval:g} Hz"
    per_beat: dict[int, float] = {}
    floor_per_beat: dict[int, float] = {}
    for count in sizes:
        top = count == sizes[-1]
        trace = top and loop_name == "asyncio"

        async def both(
            count: int = count, trace: bool = trace
        ) -> tuple[Window, Window, float | None]:
            floor: Window | None = None
            if not setting.keepalive_first:
                floor = await _floor_window(address, count, beat.interval, duration)
            ours, per_monitor = await _keepalive_window(address, count, beat, duration, trace)
            if floor is None:
                floor = await _floor_window(address, count, beat.interval, duration)
            return floor, ours, per_monitor

        floor, ours, per_monitor = _run_on(loop_name, both())
        per_beat[count] = ours.us_per_beat
        floor_per_beat[count] = floor.us_per_beat
        for contender, window in (("keepalive", ours), ("bare-I/O floor", floor)):
            report.point(
                f"{contender} CPU per beat vs connections ({loop_name})",
                x_label="connections",
                y_label="µs CPU per beat",
                loop=loop_name,
                x=count,
                y=window.us_per_beat,
            )
        detail = (
            f"keepalive {ours.us_per_beat:.2f} µs/beat (mean {ours.mean_us:.2f}, {ours.beats} "
            f"beats), floor {floor.us_per_beat:.2f} (mean {floor.mean_us:.2f}, {floor.beats})"
        )
        name = f"{loop_name} {_thousands(count)} at {hz}"
        if top:
            _per_beat_row(
                report,
                name,
                contender=f"keepalive.aio, one timer per loop ({loop_name})",
                baseline=f"bare-I/O floor ({loop_name})",
                limit=ASYNC_FLOOR_LIMIT,
                loop=loop_name,
                ours=ours,
                theirs=floor,
                detail=detail,
            )
        else:
            print(f"  {name:<52} {ours.us_per_beat / floor.us_per_beat:7.3f}x  {detail}")
        if per_monitor is not None:
            _memory_row(
                report,
                "memory per asyncio monitor",
                contender="keepalive.aio monitor (tracemalloc)",
                goal=ASYNC_MONITOR_BYTES,
                loop=loop_name,
                measured=per_monitor,
                detail=f"{per_monitor:.0f} B per monitor at {count} connections",
            )
    if len(sizes) > 1:
        span = f"{_thousands(sizes[0])} to {_thousands(sizes[-1])}"
        _flatness_row(
            report,
            f"{loop_name} CPU per beat, {span}",
            contender="keepalive.aio, most CPU per beat over the sizes",
            limit=SCALING_LIMIT,
            loop=loop_name,
            per_beat=per_beat,
        )
        # The control: how flat the floor itself measures, under the same noise.
        _flatness_row(
            report,
            f"{loop_name} floor CPU per beat, {span}",
            contender="bare-I/O floor, most CPU per beat over the sizes",
            limit=None,
            loop=loop_name,
            per_beat=floor_per_beat,
        )


# -- trio ------------------------------------------------------------------------------------------


def _load_trio_contenders() -> ModuleType | None:
    if not TRIO_CONTENDERS.exists():
        return None
    spec = importlib.util.spec_from_file_location("_trio_contenders", TRIO_CONTENDERS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _measure_trio(report: Report, setting: _Setting, count: int) -> None:
    try:
        contenders = _load_trio_contenders()
    except Exception as exc:  # another engineer's module: report it, measure the rest
        report.note(f"trio: not measured (benchmarks/_trio_contenders.py failed to load: {exc!r})")
        return
    if contenders is None:
        report.note("trio: not measured (benchmarks/_trio_contenders.py missing)")
        return
    windows: dict[str, Window] = {}
    try:
        for kind in ("keepalive", "floor") if setting.keepalive_first else ("floor", "keepalive"):
            measured = contenders.measure(
                kind, count, setting.beat.interval, setting.duration, setting.address
            )
            windows[kind] = Window(int(measured["beats"]), float(measured["cpu_s"]))
    except Exception as exc:
        report.note(f"trio: not measured (measure() raised {exc!r})")
        return
    ours, floor = windows["keepalive"], windows["floor"]
    _per_beat_row(
        report,
        f"trio {_thousands(count)} at {1 / setting.beat.interval:g} Hz",
        contender="keepalive.trio",
        baseline="bare-I/O floor (trio)",
        limit=None,
        loop="trio",
        ours=ours,
        theirs=floor,
        detail=(
            f"keepalive {ours.us_per_beat:.2f} µs/beat ({ours.beats} beats), "
            f"floor {floor.us_per_beat:.2f} µs/beat ({floor.beats} beats)"
        ),
    )


# -- blocking sockets ------------------------------------------------------------------------------


def selector_mode_options() -> dict[str, object] | None:
    """The keyword arguments of ``sync.monitor`` that select the opt-in selector mode (one
    thread watches every socket and consumes pongs), or None if this checkout has none."""
    parameters = inspect.signature(sync.monitor).parameters
    if "mode" in parameters:
        return {"mode": "selector"}
    if "selector" in parameters:
        return {"selector": True}
    return None


def _start_threads(
    targets: list[tuple[Callable[..., None], tuple[object, ...]]],
) -> list[threading.Thread]:
    threads = [threading.Thread(target=t, args=a, daemon=True) for t, a in targets]
    for thread in threads:
        thread.start()
    return threads


def _reader(sock: socket.socket | sync.MonitoredSocket, pongs: list[int] | None, slot: int) -> None:
    """The application's reader thread, blocked in ``recv`` (the baseline counts pongs in its
    own slot: a lock shared by a thousand readers would charge contention it does not have)."""
    try:
        while data := sock.recv(4096):
            if pongs is not None:
                pongs[slot] += data.count(PONG)
    except OSError:
        pass


def _threads_window(
    address: tuple[str, int], count: int, beat: HeartbeatConfig, duration: float
) -> Window:
    """The usual pattern: a heartbeat thread per socket beside its reader thread."""
    stop = threading.Event()
    pongs = [0] * count

    def pinger(sock: socket.socket) -> None:
        while not stop.wait(beat.interval):
            sock.sendall(PING)

    socks = [socket.create_connection(address) for _ in range(count)]
    readers = _start_threads([(_reader, (s, pongs, i)) for i, s in enumerate(socks)])
    pingers = _start_threads([(pinger, (s,)) for s in socks])
    time.sleep(_warm_up(beat.interval))
    window = _Slicer(lambda: sum(pongs), duration, beat.interval).run()
    stop.set()
    for sock in socks:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    for thread in readers + pingers:
        thread.join()
    return window


def _sync_window(
    address: tuple[str, int],
    count: int,
    beat: HeartbeatConfig,
    duration: float,
    *,
    options: dict[str, object],
    trace: bool,
) -> tuple[Window, tuple[float, float, float] | None]:
    """keepalive.sync.monitor on every socket, a reader thread each; with ``trace``, also
    (bytes per monitor made, held once running, held per blocked recv)."""
    socks = [socket.create_connection(address) for _ in range(count)]
    memory: tuple[float, float, float] | None = None
    if trace:
        gc.collect()
        tracemalloc.start(16)
        traced_before = tracemalloc.get_traced_memory()[0]
    monitored = [
        sync.monitor(s, heartbeat=beat, ping=PING, pong=PONG, **options)  # type: ignore[arg-type]
        for s in socks
    ]
    if trace:
        gc.collect()
        created = tracemalloc.get_traced_memory()[0] - traced_before
    readers = _start_threads([(_reader, (m, None, i)) for i, m in enumerate(monitored)])
    time.sleep(_warm_up(beat.interval))  # every socket has pinged, read its pong and waits again
    if trace:
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        held, waiting = _steady_bytes(snapshot)
        memory = (created / count, held / count, waiting / count)
        time.sleep(0.3)
    window = _Slicer(
        lambda: sum(m.stats.pongs_received for m in monitored), duration, beat.interval
    ).run()
    dead = sum(m.dead for m in monitored)
    for monitored_socket in monitored:
        monitored_socket.shutdown(socket.SHUT_RDWR)
        monitored_socket.close()
    for thread in readers:
        thread.join()
    if dead:
        raise RuntimeError(f"{dead} of {count} monitors declared their peer dead: overloaded?")
    return window, memory


def _steady_bytes(snapshot: tracemalloc.Snapshot) -> tuple[int, int]:
    """Bytes allocated in keepalive code and still alive: (held by monitors, held by recv
    calls waiting in MonitoredSocket._wait)."""
    from keepalive.sync import connection

    package = os.path.dirname(connection.__file__) + os.sep
    wait = getattr(connection.MonitoredSocket, "_wait", None)
    wait_lines: range = range(0)
    if wait is not None:
        lines, first = inspect.getsourcelines(wait)
        wait_lines = range(first, first + len(lines))
    held = waiting = 0
    for trace in snapshot.traces:
        frames = [frame for frame in trace.traceback if frame.filename.startswith(package)]
        if not frames:
            continue
        if any(f.filename == connection.__file__ and f.lineno in wait_lines for f in frames):
            waiting += trace.size
        else:
            held += trace.size
    return held, waiting


def _measure_blocking(report: Report, setting: _Setting, count: int) -> None:
    address, beat, duration = setting.address, setting.beat, setting.duration
    selector = selector_mode_options()
    contenders: list[tuple[str, dict[str, object] | None]] = [("keepalive.sync", {})]
    if selector is not None:
        contenders.append(("keepalive.sync, selector mode", selector))
    else:
        report.note("blocking selector mode: not measured (keepalive.sync has no opt-in mode yet)")
    order: list[tuple[str, dict[str, object] | None]] = [("threads", None), *contenders]
    if setting.keepalive_first:
        order = [*contenders, ("threads", None)]
    windows: dict[str, Window] = {}
    for label, options in order:
        if options is None:
            windows[label] = _threads_window(address, count, beat, duration)
            continue
        trace = not options  # memory of the default mode
        window, memory = _sync_window(address, count, beat, duration, options=options, trace=trace)
        windows[label] = window
        if memory is not None:
            created, held, waiting = memory
            _memory_row(
                report,
                "memory per blocking monitor",
                contender="keepalive.sync monitor (tracemalloc, as made)",
                goal=BLOCKING_MONITOR_BYTES,
                loop=None,
                measured=created,
                detail=(
                    f"{created:.0f} B per monitor as made; {held:.0f} B once running, "
                    f"plus {waiting:.0f} B per recv() blocked in it"
                ),
            )
    threads = windows["threads"]
    hz = f"{1 / beat.interval:g} Hz"
    for label, options in contenders:
        ours = windows[label]
        selector_mode = bool(options)
        _per_beat_row(
            report,
            f"blocking {_thousands(count)} at {hz}" + (", selector mode" if selector_mode else ""),
            contender=label + ", a reader thread per socket",
            baseline="a heartbeat thread per socket, a reader thread per socket",
            limit=BLOCKING_SELECTOR_LIMIT if selector_mode else None,
            loop=None,
            ours=ours,
            theirs=threads,
            detail=(
                f"{ours.us_per_beat:.2f} µs/beat (mean {ours.mean_us:.2f}, {ours.beats} beats), "
                f"threads {threads.us_per_beat:.2f} (mean {threads.mean_us:.2f}, {threads.beats})"
            ),
        )


# -- main ------------------------------------------------------------------------------------------


def _loops(text: str) -> list[str]:
    if text.strip() == "none":
        return []  # the blocking rows only
    loops = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in loops if name not in ("asyncio", "uvloop", "trio")]
    if unknown or not loops:
        raise argparse.ArgumentTypeError(
            f"expected loops among asyncio, uvloop, trio (comma-separated), or none; got {text!r}"
        )
    return loops


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",")})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(
            f"expected connection counts >= 1, comma-separated (e.g. 1000,10000), got {text!r}"
        )
    return sizes


def _uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def _each_run(
    runs: int, address: tuple[str, int], beat: HeartbeatConfig, duration: float
) -> Iterator[tuple[int, _Setting]]:
    for run in range(runs):
        yield run, _Setting(address, beat, duration, run % 2 == 1)  # flip the order every run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=[1000, 2500, 5000, 10000],
        help="asyncio connection counts of the scaling series; the largest is the main row "
        "(default 1000,2500,5000,10000)",
    )
    add_window_arguments(parser)
    parser.add_argument(
        "--loops",
        type=_loops,
        default=["asyncio", "uvloop", "trio"],
        help="event loops to measure (default asyncio,uvloop,trio; none: the blocking rows only)",
    )
    parser.add_argument("--no-blocking", action="store_true", help="skip the blocking rows")
    add_run_arguments(
        parser,
        runs=1,
        quick_help="a smoke run (small counts, short windows, 4 Hz): checks the script, not speed",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.sockets, args.duration, args.interval = [100, 200], 50, 0.6, 0.25
    beat = HeartbeatConfig(interval=args.interval, timeout=max(10.0, args.interval * 4))
    loops: list[str] = args.loops
    if "uvloop" in loops and not _uvloop_available():
        loops = [name for name in loops if name != "uvloop"]
        print("uvloop: not measured (not installed)")
    raise_nofile(max(args.sizes[-1], args.sockets) + 256)
    report = Report("heartbeat")
    print(
        f"client {pin_cpu(-1)} (event loops; the blocking rows on every CPU), responder first CPU"
    )
    responders = Responders()
    started = time.monotonic()
    try:
        if any(name in ("asyncio", "uvloop") for name in loops):
            print("== warming the process up (not measured)", flush=True)
            _run_on("asyncio", _warm_up_process(responders.address, args.sizes[0], beat))
        each_run = _each_run(args.runs, responders.address, beat, args.duration)
        for run, setting in each_run:
            report.runs = run + 1
            print(
                f"== run {run + 1}/{args.runs}: beats every {beat.interval:g} s, "
                f"{args.duration:g} s measured per contender, "
                f"{'keepalive' if setting.keepalive_first else 'the baseline'} first",
                flush=True,
            )
            for loop_name in loops:
                if loop_name == "trio":
                    _measure_trio(report, setting, args.sizes[-1])
                else:
                    _measure_loop(report, setting, loop_name, args.sizes)
            if not args.no_blocking:
                with all_cpus():
                    _measure_blocking(report, setting, args.sockets)
    finally:
        responders.close()
    finish(report, started, args.json)


if __name__ == "__main__":
    main()
