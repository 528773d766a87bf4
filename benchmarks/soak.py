"""Soak test: supervised connections through misbehaving proxies for minutes, checked end to end.

N supervised connections (half :class:`keepalive.sync.Supervisor`, half
:class:`keepalive.aio.Supervisor`) talk to one :class:`~keepalive.testing.EchoServer`, each
through one of P :class:`~keepalive.testing.FaultProxy` (connections 2k, sync, and 2k+1,
asyncio, through proxy ``k % P``: both kinds on every proxy). Each proxy, on its own
seeded schedule, waits 3-6 s, then injects one fault, chosen uniformly:

* ``freeze``: nothing crosses for 0.2-2 s (both kernels still ACK and answer keepalive probes:
  only the heartbeat can see it), then ``forward``;
* ``reset``: every current flow is reset (RST) at once; the proxy goes on forwarding;
* ``refuse``: the server is down for 0.2-2 s: ``refuse()`` then ``reset()`` (current flows
  reset, new ones reset on arrival), then ``forward``.

Every connection's application streams numbered, checksummed lines (``ID SEQ PAYLOAD CRC32``)
through the echo continuously: ``--rate`` lines per second, at most ``--window`` lines in flight.
Sync connections share application threads (``--sync-per-thread``, 10 each: every 50 ms the
thread writes the lines that are due and reads with a non-blocking ``recv``; the supervisor's
own thread reads the socket all along); asyncio connections have a reader task and a writer
task each. On a new connection the application resends from the first line not yet echoed.

Three processes, plus the parent that starts them, relays the fault reports and merges the
results: the network (echo server, proxies, fault schedule), the sync clients, the asyncio
clients. So each has its own GIL (an event loop sharing one with hundreds of supervisor
threads is starved), and fds, threads and RSS are measured per process. All read
``time.monotonic()`` (CLOCK_MONOTONIC: one clock for the machine); the network process
reports every fault with the time its call *started*, and each client process judges its
own connections (deaths are judged 2 s late, so that the fault's report is in).

Checked (a violation makes the exit status 1):

* **detection**: every connection that dies does so at most ``detection_bound + 0.5 s``
  (``0.3 + 0.5 + 0.5 = 1.3 s``) after its fault began: measured from the start of the
  ``freeze()`` / ``reset()`` call to ``on_disconnect``, or from the connection's
  ``on_connect`` if it was made during the fault. A heartbeat death must fall in a freeze, a
  reset death in a reset/refuse (``unattributed`` otherwise: a false death). And **none is
  missed**: for every freeze longer than 1.3 s, the connection live when it began must have
  had its ``on_disconnect`` by then.
* **healing**: after every fault, each of the proxy's connections echoes a line again at most
  2.8 s after the ``forward()`` call (after ``reset()`` for resets): a death may come up to
  1.3 s after the forward (a connection made late in a freeze), then the backoff waits at
  most ``max_delay`` = 1 s, and 0.5 s covers connecting and the first echo under load.
  And all connections again within 2.8 s after the faults stop.
* **one live connection per supervisor**: at each ``on_connect`` the previous connection must
  be ended and closed; after the faults stop, each proxy holds exactly one flow per
  connection and the echo server exactly N connections.
* **hooks in the documented order**, per supervisor: ``on_connect``, then ``on_disconnect``
  (published) or ``on_backoff`` (ended during ``on_connect``, not published), then
  ``on_backoff``, ...; a failed connect only ``on_backoff``; ``stats.connects`` agreeing;
  after ``close()``, nothing; every published connection gets its ``on_disconnect``.
* **no byte lost or corrupted within a connection**: every echoed line must be exactly the
  oldest line in flight on that connection (otherwise ``corrupted``, ``duplicate``, ``gap`` or
  ``foreign``); so the accepted stream of each connection is 1, 2, 3, ... without gap or
  duplicate across reconnects. Lines in flight when a connection ends (sent, not fully
  echoed) are *cut at the boundary*: counted (lines, bytes, and the partial echo received),
  and resent on the next connection. (Asyncio readers raise the error at once, so echoes
  already received but not yet read are cut too.)
* **no growth**: fds (``/proc/self/fd``) and threads (``threading.active_count()``) of each
  process when all connections are up and echoing, before the faults and after they stop
  (equal within ``4 + N/100``); RSS after ``gc.collect()`` at the end of the first minute of
  faults (a quarter of the run if shorter) and in the last one (within ``max(16 MiB, 10 %)``).
* **no supervisor gives up** (``gave-up``): ``wait_connected`` must not raise before close.

Usage::

    python benchmarks/soak.py [--connections 100] [--minutes 1] [--seed 1] [--json PATH]
                              [--proxies 10] [--rate 5] [--window 8] [--sync-per-thread 10]
                              [--retry-invalid-socket]

``--retry-invalid-socket`` makes the policy retry ``InvalidSocket`` too: a workaround for sync
supervisors that give up when a connection is reset between connect and the heartbeat's
start (see docs/soak.md), so that the rest can be soaked meanwhile.

Linux only (``/proc``). See docs/soak.md for the numbers of a long run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import heapq
import json
import math
import os
import platform
import queue
import random
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from keepalive import Backoff, HeartbeatConfig
from keepalive.errors import ConnectFailed, InvalidSocket
from keepalive.reconnect import is_retryable_default
from keepalive.supervision import DisconnectReason, SupervisorState

HEARTBEAT = HeartbeatConfig(interval=0.3, timeout=0.5)
RETRY = Backoff(initial=0.05, max_delay=1.0)
HEALTHY_AFTER = 2.0  # a connection up 2 s reconnects at once (and restarts the backoff)
DETECTION_SLACK = 0.5
DETECTION_LIMIT = HEARTBEAT.detection_bound + DETECTION_SLACK  # 1.3 s
RECONNECT_SLACK = 0.5  # connect, on_connect and the first echo, on a loaded machine
HEAL_LIMIT = DETECTION_LIMIT + RETRY.max_delay + RECONNECT_SLACK  # 2.8 s
FAULT_GAP = (3.0, 6.0)  # quiet seconds between two faults of a proxy (> HEAL_LIMIT)
FAULT_LENGTH = (0.2, 2.0)
FAULT_KINDS = ("freeze", "reset", "refuse")
REPORT_LAG = 2.0  # seconds before a death is judged (its fault's report is surely in)
MIB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Checkers (pure: no I/O, times passed in; tests/test_soak.py exercises them directly)


class Histogram:
    """Durations at 1 ms resolution (rounded up) up to ``limit`` seconds; exact count and max."""

    RESOLUTION = 0.001

    def __init__(self, limit: float = 30.0) -> None:
        self._counts = [0] * (int(limit / self.RESOLUTION) + 2)
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        index = min(len(self._counts) - 1, max(0, math.ceil(seconds / self.RESOLUTION - 1e-9)))
        self._counts[index] += 1
        self.count += 1
        self.max = max(self.max, seconds)

    def merge(self, other: Histogram) -> Histogram:
        merged = Histogram()
        merged._counts = [a + b for a, b in zip(self._counts, other._counts, strict=True)]
        merged.count = self.count + other.count
        merged.max = max(self.max, other.max)
        return merged

    def to_json(self) -> dict[str, Any]:
        counts = {str(index): count for index, count in enumerate(self._counts) if count}
        return {"counts": counts, "count": self.count, "max": self.max}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        histogram = cls()
        for index, count in data["counts"].items():
            histogram._counts[int(index)] += count
        histogram.count = data["count"]
        histogram.max = data["max"]
        return histogram

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (nearest rank), None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        running = 0
        for index, count in enumerate(self._counts):
            running += count
            if running >= rank:
                return min(index * self.RESOLUTION, self.max)
        return self.max  # pragma: no cover - ranks never exceed the count

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "median": self.quantile(0.5),
            "p99": self.quantile(0.99),
            "max": self.max if self.count else None,
        }


class Violations:
    """Violations by kind, with the first few of each kind described. Thread-safe."""

    KEEP = 6  # examples kept per kind

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []

    def add(self, kind: str, detail: str) -> None:
        with self._lock:
            self.counts[kind] += 1
            if self.counts[kind] <= self.KEEP:
                self.examples.append(f"[{kind}] {detail}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


_PAYLOAD = bytes(
    random.Random(0).choices(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST-", k=8192)
)
_PAYLOAD_SPAN = (16, 240)


def make_line(stream_id: int, seq: int) -> bytes:
    """Line ``seq`` (1, 2, ...) of stream ``stream_id``: ``ID SEQ PAYLOAD CRC32\\n``."""
    low, high = _PAYLOAD_SPAN
    length = low + (seq * 7919 + stream_id * 31) % (high - low)
    start = (seq * 104729 + stream_id * 1299709) % (len(_PAYLOAD) - length)
    body = b"%d %d %s" % (stream_id, seq, _PAYLOAD[start : start + length])
    return b"%s %08x\n" % (body, zlib.crc32(body))


def diagnose(line: bytes, stream_id: int, expected_seq: int) -> str:
    """What is wrong with ``line``, received where line ``expected_seq`` was due."""
    body, _, crc = line.rstrip(b"\n").rpartition(b" ")
    try:
        intact = int(crc, 16) == zlib.crc32(body)
        sid, seq = (int(part) for part in body.split(b" ", 2)[:2])
    except ValueError:
        return "corrupted"
    if not intact:
        return "corrupted"
    if sid != stream_id:
        return "foreign"
    if seq < expected_seq:
        return "duplicate"
    if seq > expected_seq:
        return "gap"
    return "corrupted"


class LineStream:
    """One supervisor's application stream, across its connections.

    ``begin()`` on each new connection (resend from the first line not echoed back),
    ``next_line()`` to send, ``feed(data)`` with what was received, ``end()`` when the
    connection is over. Lines 1..``accepted`` came back exactly and in order.
    """

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.accepted = 0
        self.sent_high = 0
        self.next_seq = 1
        self.in_flight: deque[bytes] = deque()
        self.partial = bytearray()
        self.connections = 0
        self.lines_sent = 0
        self.lines_resent = 0
        self.bytes_accepted = 0
        self.cut_lines = 0
        self.cut_bytes = 0
        self.cut_partial_bytes = 0

    def begin(self) -> None:
        self.in_flight.clear()
        self.partial.clear()
        self.next_seq = self.accepted + 1
        self.connections += 1

    def next_line(self) -> bytes:
        seq = self.next_seq
        self.next_seq += 1
        line = make_line(self.id, seq)
        if seq <= self.sent_high:
            self.lines_resent += 1
        else:
            self.sent_high = seq
        self.lines_sent += 1
        self.in_flight.append(line)
        return line

    def feed(self, data: bytes) -> tuple[int, str | None]:
        """Take received bytes: (lines accepted, the problem that stops this connection)."""
        buffer = self.partial
        buffer += data
        accepted = 0
        start = 0
        problem = None
        while True:
            newline = buffer.find(b"\n", start)
            if newline < 0:
                break
            line = bytes(buffer[start : newline + 1])
            start = newline + 1
            problem = self._accept(line)
            if problem is not None:
                break
            accepted += 1
        del buffer[:start]
        return accepted, problem

    def _accept(self, line: bytes) -> str | None:
        if not self.in_flight:
            return f"stream {self.id}: unexpected line (nothing in flight): {line[:48]!r}"
        if line != self.in_flight[0]:
            kind = diagnose(line, self.id, self.accepted + 1)
            return f"stream {self.id}: {kind}: line {self.accepted + 1} due, got {line[:48]!r}"
        self.in_flight.popleft()
        self.accepted += 1
        self.bytes_accepted += len(line)
        return None

    def end(self) -> None:
        """The connection is over: lines in flight are cut (resent by the next one)."""
        self.cut_lines += len(self.in_flight)
        self.cut_bytes += sum(len(line) for line in self.in_flight)
        self.cut_partial_bytes += len(self.partial)
        self.in_flight.clear()
        self.partial.clear()


class HookChecker:
    """The documented hook order of one supervisor, with its ``stats.connects``.

    States: ``ready`` (an attempt is next), ``connected`` (``on_connect`` returned), ``ended``
    (``on_disconnect`` came), ``closed`` (the supervisor was closed: no hook may follow).
    Each method returns the problems found (empty: in order).
    """

    def __init__(self) -> None:
        self.state = "ready"
        self.published = 0  # connections that got their on_disconnect
        self.unpublished = 0  # ended during on_connect (on_backoff without on_disconnect)
        self.failed = 0  # attempts that failed before on_connect
        self.backoffs = 0

    def on_connect(self, connects: int) -> list[str]:
        problems = []
        if self.state != "ready":
            problems.append(f"on_connect in state {self.state}")
        if connects != self.published:
            problems.append(f"on_connect with stats.connects {connects} != {self.published}")
        self.state = "connected"
        return problems

    def on_disconnect(self, connects: int) -> list[str]:
        problems = []
        if self.state != "connected":
            problems.append(f"on_disconnect in state {self.state}")
        self.published += 1
        if connects != self.published:
            problems.append(f"on_disconnect with stats.connects {connects} != {self.published}")
        self.state = "ended"
        return problems

    def on_backoff(self, connects: int, delay: float, max_delay: float) -> list[str]:
        problems = []
        if self.state == "connected":
            self.unpublished += 1
        elif self.state == "ready":
            self.failed += 1
        elif self.state != "ended":
            problems.append(f"on_backoff in state {self.state}")
        if connects != self.published:
            problems.append(f"on_backoff with stats.connects {connects} != {self.published}")
        if not 0.0 <= delay <= max_delay:
            problems.append(f"on_backoff delay {delay!r} outside [0, {max_delay}]")
        self.backoffs += 1
        self.state = "ready"
        return problems

    def closed(self, connects: int) -> list[str]:
        """The supervisor's close() returned: every published connection had on_disconnect."""
        problems = []
        if connects != self.published:
            problems.append(f"closed with stats.connects {connects} != {self.published} ended")
        self.state = "closed"
        return problems


@dataclass
class Fault:
    """One fault of one proxy; times are the starts of the proxy calls."""

    id: int
    proxy: int
    kind: str
    t0: float  # freeze()/reset()/refuse() called
    t_done: float  # ... and returned
    t1: float | None = None  # forward() called (reset: t0)
    flows: int = 0


def attribute(
    death_t: float, conn_t: float, reason: str, faults: Sequence[Fault], limit: float
) -> tuple[Fault | None, float | None, str | None]:
    """The fault that explains a death: (fault, detection seconds, problem or None).

    A heartbeat death needs a freeze that began before it, of a connection made before the
    freeze ended; a reset (or end of stream) needs a reset or refuse, of a connection made
    before the proxy's reset returned (refuse: before its forward), give or take the slack of
    ``on_connect`` running late. The detection time counts from the fault's start, or from
    ``on_connect`` for a connection made during the fault, and must be at most ``limit``.
    """
    before = [fault for fault in faults if fault.t0 <= death_t]
    if not before:
        return None, None, f"{reason} death with no fault before it"
    fault = before[-1]
    detection = death_t - max(fault.t0, conn_t)
    if reason == DisconnectReason.HEARTBEAT_TIMEOUT.value:
        if fault.kind != "freeze":
            return fault, None, f"heartbeat death {death_t - fault.t0:.3f} s after a {fault.kind}"
        if fault.t1 is not None and conn_t >= fault.t1:
            return fault, None, "heartbeat death of a connection made after the freeze ended"
    elif reason in (DisconnectReason.RESET.value, DisconnectReason.PEER_CLOSED.value):
        if fault.kind == "freeze":
            return fault, None, f"{reason} death {death_t - fault.t0:.3f} s after a freeze"
        end = fault.t_done if fault.kind == "reset" else fault.t1
        if end is not None and conn_t > end + DETECTION_SLACK:
            return fault, None, f"{reason} death of a connection made after the {fault.kind}"
    else:
        return fault, None, f"unexpected reason {reason!r}"
    if detection > limit:
        return fault, detection, f"{reason} detected {detection:.3f} s after the {fault.kind}"
    return fault, detection, None


def first_at_or_after(times: Iterable[float], moment: float) -> float | None:
    return next((t for t in times if t >= moment), None)


def live_at(history: Iterable[Sequence[float | None]], moment: float) -> list[float | None] | None:
    """The ``[t_connect, t_end]`` entry of the connection live at ``moment``, if any."""
    for entry in history:
        start, end = entry[0], entry[1]
        assert start is not None
        if start <= moment and (end is None or end > moment):
            return list(entry)
    return None


# ---------------------------------------------------------------------------------------------
# The network process: echo server, proxies, fault schedule (talks JSON lines on stdout)


def _raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _resources(collect: bool) -> dict[str, int]:
    if collect:
        gc.collect()
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "rss": psutil.Process().memory_info().rss,
    }


class _Injector:
    """Per proxy: quiet 3-6 s, one fault (freeze/reset/refuse, 0.2-2 s), forward; repeat."""

    def __init__(self, proxies: list[Any], seed: int, emit: Callable[..., None]) -> None:
        self._proxies = proxies
        self._rngs = [random.Random(f"{seed}:{index}") for index in range(len(proxies))]
        self._emit = emit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-injector", daemon=True)
        self._next_id = 0
        self.counts: Counter[str] = Counter()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        now = time.monotonic()
        heap = [
            (now + rng.uniform(*FAULT_GAP), index, "start") for index, rng in enumerate(self._rngs)
        ]
        heapq.heapify(heap)
        active: dict[int, int] = {}
        while not self._stop.is_set():
            due, index, what = heap[0]
            wait = due - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
                continue
            heapq.heappop(heap)
            rng, proxy = self._rngs[index], self._proxies[index]
            if what == "start":
                kind = rng.choice(FAULT_KINDS)
                length = rng.uniform(*FAULT_LENGTH)
                gap = rng.uniform(*FAULT_GAP)
                fault_id = self._next_id
                self._next_id += 1
                t0 = time.monotonic()
                if kind == "freeze":
                    proxy.freeze()
                    flows = proxy.flows
                elif kind == "reset":
                    flows = proxy.reset()
                else:
                    proxy.refuse()
                    flows = proxy.reset()
                t_done = time.monotonic()
                self.counts[kind] += 1
                self._emit(
                    ev="fault",
                    id=fault_id,
                    proxy=index,
                    kind=kind,
                    t0=t0,
                    t_done=t_done,
                    flows=flows,
                )
                if kind == "reset":
                    self._emit(ev="forward", id=fault_id, proxy=index, t1=t0)
                    heapq.heappush(heap, (t_done + gap, index, "start"))
                else:
                    active[index] = fault_id
                    heapq.heappush(heap, (t0 + length, index, f"end:{gap}"))
            else:
                t1 = time.monotonic()
                proxy.forward()
                self._emit(ev="forward", id=active.pop(index), proxy=index, t1=t1)
                gap = float(what.split(":", 1)[1])
                heapq.heappush(heap, (time.monotonic() + gap, index, "start"))
        for index, fault_id in sorted(active.items()):  # stopped during a fault: end it now
            t1 = time.monotonic()
            self._proxies[index].forward()
            self._emit(ev="forward", id=fault_id, proxy=index, t1=t1)


def _emitter() -> Callable[..., None]:
    """A thread-safe writer of JSON lines to stdout (a child's reports to the parent)."""
    lock = threading.Lock()

    def emit(**message: Any) -> None:
        with lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    return emit


def network_main(proxies: int, seed: int) -> int:
    """The network process: serve; inject faults from "go" to "stop"; report on "status"."""
    from keepalive.testing import EchoServer, FaultProxy

    _raise_nofile()
    emit = _emitter()
    server = EchoServer().start()
    relays = [FaultProxy(server.address).start() for _ in range(proxies)]
    injector = _Injector(relays, seed, emit)
    emit(ev="ready", proxies=[list(relay.address) for relay in relays])
    try:
        for raw in sys.stdin:
            command = json.loads(raw)["cmd"]
            if command == "go":
                injector.start()
            elif command == "stop":
                injector.stop()
                emit(ev="stopped", t=time.monotonic(), counts=dict(injector.counts))
            elif command in ("status", "peek"):
                emit(
                    ev="status",
                    flows=[relay.flows for relay in relays],
                    echo_connections=server.connections,
                    refused=sum(relay.refused for relay in relays),
                    accepted=sum(relay.accepted for relay in relays),
                    bytes_discarded=sum(relay.bytes_discarded for relay in relays),
                    **_resources(collect=command == "status"),
                )
            elif command == "exit":
                break
    finally:
        injector.stop()
        for relay in relays:
            relay.close()
        server.close()
    return 0


# ---------------------------------------------------------------------------------------------
# The clients


@dataclass(eq=False)
class Record:
    """One supervised connection: its supervisor, application stream and checks."""

    id: int
    kind: str  # "sync" or "asyncio"
    proxy: int
    violations: Violations
    deaths: deque[tuple[Record, str, float, float]]
    sup: Any = None
    conn: Any = None
    closing: bool = False
    app_closed: bool = False
    given_up: bool = False
    stream: LineStream = field(init=False)
    checker: HookChecker = field(default_factory=HookChecker)
    history: deque[list[float | None]] = field(default_factory=lambda: deque(maxlen=16))
    accepts: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    reasons: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.stream = LineStream(self.id)

    def _report(self, problems: list[str]) -> None:
        for problem in problems:
            self.violations.add("hooks", f"{self.kind} #{self.id}: {problem}")

    # -- hooks (the supervisor's thread or task) ---------------------------------------------

    def on_connect(self, conn: Any) -> None:
        now = time.monotonic()
        previous = self.conn
        if previous is not None:
            if self.kind == "sync":
                over = previous.disconnect_reason is not None and previous.closed
            else:
                sock = previous.writer.transport.get_extra_info("socket")
                over = previous.ended and (sock is None or sock.fileno() < 0)
            if not over:
                self.violations.add(
                    "two-live", f"{self.kind} #{self.id}: previous connection not closed"
                )
        self._report(self.checker.on_connect(self.sup.stats.connects))
        self.conn = conn
        self.history.append([now, None])

    def on_disconnect(self, reason: DisconnectReason, error: BaseException | None) -> None:
        now = time.monotonic()
        self._report(self.checker.on_disconnect(self.sup.stats.connects))
        entry = self.history[-1]
        entry[1] = now
        if self.closing or self.app_closed:  # ended on this side: expected
            self.app_closed = False
            return
        self.reasons[reason.value] += 1
        start = entry[0]
        assert start is not None
        self.deaths.append((self, reason.value, now, start))

    def on_backoff(self, delay: float, error: BaseException | None) -> None:
        now = time.monotonic()
        was = self.checker.state
        self._report(self.checker.on_backoff(self.sup.stats.connects, delay, RETRY.max_delay))
        if was == "connected":  # ended during on_connect, never published
            self.history[-1][1] = now

    def gave_up(self, exc: ConnectFailed) -> None:
        """``wait_connected`` raised: fine after close(), a violation before."""
        self.given_up = True
        if not self.closing:
            self.violations.add(
                "gave-up",
                f"{self.kind} #{self.id}: the supervisor gave up ({exc.reason}),"
                f" last error {exc.__cause__!r}",
            )

    def stream_problem(self, problem: str) -> None:
        self.violations.add("stream", f"{self.kind} #{self.id}: {problem}")
        self.app_closed = True  # the application closes it: resynchronise on the next one

    def supervisor_options(self, seed: int, retry: Backoff) -> dict[str, Any]:
        return {
            "heartbeat": HEARTBEAT,
            "retry": retry,
            "healthy_after": HEALTHY_AFTER,
            "on_connect": self.on_connect,
            "on_disconnect": self.on_disconnect,
            "on_backoff": self.on_backoff,
            "rng": random.Random(seed * 1_000_003 + self.id),
            "name": f"soak-{self.kind}-{self.id}",
        }


SYNC_TICK = 0.05  # how often a sync application thread looks at its connections


def sync_app(recs: list[Record], rate: float, window: int, stop: threading.Event) -> None:
    """One thread for several sync connections (fewer threads, fewer wake-ups).

    Every ``SYNC_TICK`` it looks at each of its connections: takes the live one from
    ``sup.connection`` (None while down), writes a line when one is due (window permitting)
    and reads what the supervisor buffered with non-blocking ``recv`` (``settimeout(0)``).
    Echoes are thus timed up to one tick late, which only lengthens measured heal times.
    """
    interval = 1.0 / rate
    rng = random.Random(recs[0].id)
    conns: dict[Record, Any] = {}
    next_send: dict[Record, float] = {}
    while not stop.wait(SYNC_TICK):
        for rec in recs:
            stream = rec.stream
            conn = conns.get(rec)
            if conn is None:
                conn = rec.sup.connection
                if conn is None:
                    if rec.sup.state is SupervisorState.FAILED and not rec.given_up:
                        try:
                            rec.sup.wait_connected(timeout=0)
                        except ConnectFailed as exc:
                            rec.gave_up(exc)
                    continue
                conn.settimeout(0)
                conns[rec] = conn
                stream.begin()
                next_send[rec] = time.monotonic() + rng.random() * interval
            try:
                now = time.monotonic()
                if now >= next_send[rec]:
                    if len(stream.in_flight) < window:
                        conn.sendall(stream.next_line())
                    next_send[rec] = max(next_send[rec] + interval, now)
                while True:
                    try:
                        data = conn.recv(65536)
                    except BlockingIOError:
                        break
                    if not data:
                        raise EOFError
                    accepted, problem = stream.feed(data)
                    if accepted:
                        rec.accepts.append(time.monotonic())
                    if problem is not None:
                        rec.stream_problem(problem)
                        conn.close()
                        raise EOFError
            except (OSError, EOFError):  # over: the supervisor makes the next one
                del conns[rec]
                stream.end()
    for rec in conns:
        rec.stream.end()


async def _aio_writer(rec: Record, writer: Any, interval: float, window: int) -> None:
    stream = rec.stream
    await asyncio.sleep(random.Random(rec.id).random() * interval)
    while True:
        if len(stream.in_flight) < window:
            writer.write(stream.next_line())
            await writer.drain()
        await asyncio.sleep(interval)


async def aio_app(rec: Record, rate: float, window: int) -> None:
    """A reader (this task) and a writer task per connection."""
    sup, stream = rec.sup, rec.stream
    interval = 1.0 / rate
    while True:
        try:
            conn = await sup.wait_connected()
        except ConnectFailed as exc:
            rec.gave_up(exc)
            return
        reader, writer = conn
        stream.begin()
        writing = asyncio.create_task(_aio_writer(rec, writer, interval, window))
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                accepted, problem = stream.feed(data)
                if accepted:
                    rec.accepts.append(time.monotonic())
                if problem is not None:
                    rec.stream_problem(problem)
                    conn.close()
                    break
        except OSError:
            pass
        finally:
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await writing
            stream.end()


# ---------------------------------------------------------------------------------------------
# The auditor: faults from the network process, deaths and heals from the clients


class Auditor:
    """Matches deaths to faults, times detections and heals, checks that freezes were seen."""

    def __init__(self, records: list[Record], proxies: int, violations: Violations) -> None:
        self.lock = threading.Lock()
        self.violations = violations
        self.by_proxy: list[list[Record]] = [[] for _ in range(proxies)]
        for rec in records:
            self.by_proxy[rec.proxy].append(rec)
        self.faults: list[deque[Fault]] = [deque(maxlen=32) for _ in range(proxies)]
        self.fault_by_id: dict[int, Fault] = {}
        self.deaths: deque[tuple[Record, str, float, float]] = deque()
        self.pending_heals: dict[Record, tuple[Fault, bool]] = {}
        self.freeze_checks: list[tuple[float, int]] = []
        self.kinds: Counter[str] = Counter()
        self.flows_hit: Counter[str] = Counter()
        self.death_reasons: Counter[str] = Counter()
        self.deaths_by_fault: Counter[str] = Counter()
        self.detection = {
            (client, group): Histogram()
            for client in ("sync", "asyncio")
            for group in ("freeze", "reset")
        }
        self.heal = {client: Histogram() for client in ("sync", "asyncio")}
        self.resume = Histogram()  # after faults the connection survived (short freezes)
        self.heals_late = 0
        self.preempted = 0
        self.long_freezes = 0
        self.freeze_deaths_checked = 0
        self.missed = 0
        self.origin = 0.0  # when the faults began (monotonic), to date violations

    def _at(self, moment: float) -> str:
        return f" (at +{moment - self.origin:.1f} s)"

    # -- from the reader of the network process ----------------------------------------------

    def fault_started(self, fault: Fault) -> None:
        with self.lock:
            for rec in self.by_proxy[fault.proxy]:
                pending = self.pending_heals.pop(rec, None)
                if pending is None or self._resolve_heal(rec, *pending, now=fault.t0):
                    continue
                previous, reported = pending
                if fault.t0 - (previous.t1 or previous.t0) < HEAL_LIMIT:
                    self.preempted += 1  # (never, with quiet gaps longer than HEAL_LIMIT)
                elif not reported:
                    self._not_healed(rec, previous)
            self.faults[fault.proxy].append(fault)
            self.fault_by_id[fault.id] = fault
            self.kinds[fault.kind] += 1
            self.flows_hit[fault.kind] += fault.flows

    def fault_ended(self, fault_id: int, t1: float) -> None:
        with self.lock:
            fault = self.fault_by_id.pop(fault_id)
            fault.t1 = t1
            for rec in self.by_proxy[fault.proxy]:
                self.pending_heals[rec] = (fault, False)
            if fault.kind == "freeze" and t1 - fault.t0 > DETECTION_LIMIT:
                self.long_freezes += 1
                due = fault.t0 + DETECTION_LIMIT + REPORT_LAG
                heapq.heappush(self.freeze_checks, (due, fault.id))
                self.fault_by_id[fault.id] = fault  # kept until checked

    # -- periodic work -----------------------------------------------------------------------

    def step(self, now: float, final: bool = False) -> None:
        with self.lock:
            while self.deaths and (final or self.deaths[0][2] <= now - REPORT_LAG):
                self._judge_death(*self.deaths.popleft())
            for rec, (fault, reported) in list(self.pending_heals.items()):
                if self._resolve_heal(rec, fault, reported, now=now):
                    del self.pending_heals[rec]
                elif not reported and now - (fault.t1 or fault.t0) > HEAL_LIMIT + (
                    0.0 if final else REPORT_LAG
                ):
                    self._not_healed(rec, fault)
                    self.pending_heals[rec] = (fault, True)
            while self.freeze_checks and (final or self.freeze_checks[0][0] <= now):
                _, fault_id = heapq.heappop(self.freeze_checks)
                self._check_freeze(self.fault_by_id.pop(fault_id))

    def _not_healed(self, rec: Record, fault: Fault) -> None:
        self.heals_late += 1
        self.violations.add(
            "heal",
            f"{rec.kind} #{rec.id}: no echo {HEAL_LIMIT:.1f} s after the"
            f" {fault.kind} of proxy {fault.proxy} ended{self._at(fault.t1 or fault.t0)}",
        )

    def _judge_death(self, rec: Record, reason: str, death_t: float, conn_t: float) -> None:
        self.death_reasons[reason] += 1
        fault, detection, problem = attribute(
            death_t, conn_t, reason, self.faults[rec.proxy], DETECTION_LIMIT
        )
        if fault is not None:
            self.deaths_by_fault[fault.kind] += 1
        if detection is not None and fault is not None:
            group = "freeze" if fault.kind == "freeze" else "reset"
            self.detection[rec.kind, group].add(detection)
        if problem is not None:
            kind = "detection" if detection is not None else "unattributed"
            self.violations.add(
                kind, f"{rec.kind} #{rec.id} (proxy {rec.proxy}): {problem}{self._at(death_t)}"
            )

    def _resolve_heal(self, rec: Record, fault: Fault, reported: bool, now: float) -> bool:
        """Whether ``rec`` echoed a line since ``fault`` ended (then its time is recorded)."""
        t1 = fault.t1 if fault.t1 is not None else fault.t0
        accepts = list(rec.accepts)
        healed = first_at_or_after(accepts, t1)
        if healed is None or healed > now:
            return False
        history = list(rec.history)
        reconnected = bool(history) and history[-1][0] is not None and history[-1][0] >= fault.t0
        seconds = healed - t1
        if reconnected or fault.kind != "freeze":
            self.heal[rec.kind].add(seconds)
        else:
            self.resume.add(seconds)
        if seconds > HEAL_LIMIT and not reported:
            self.heals_late += 1
            self.violations.add(
                "heal",
                f"{rec.kind} #{rec.id}: echoed {seconds:.3f} s after the {fault.kind}"
                f" of proxy {fault.proxy} ended (limit {HEAL_LIMIT:.1f} s){self._at(t1)}",
            )
        return True

    def _check_freeze(self, fault: Fault) -> None:
        limit = fault.t0 + DETECTION_LIMIT
        for rec in self.by_proxy[fault.proxy]:
            entry = live_at(list(rec.history), fault.t0)
            if entry is None:
                continue
            self.freeze_deaths_checked += 1
            end = entry[1]
            if end is None or end > limit:
                self.missed += 1
                seen = "never" if end is None else f"{end - fault.t0:.3f} s after it began"
                self.violations.add(
                    "missed",
                    f"{rec.kind} #{rec.id}: freeze of proxy {fault.proxy}"
                    f" ({(fault.t1 or 0) - fault.t0:.2f} s) noticed {seen}{self._at(fault.t0)}",
                )


# ---------------------------------------------------------------------------------------------
# A client process: the supervisors of one kind, with their own auditor


def kind_of(index: int) -> str:
    return "sync" if index % 2 == 0 else "asyncio"


def proxy_of(index: int, proxies: int) -> int:
    """Connections 2k (sync) and 2k+1 (asyncio) share a proxy: both kinds on every proxy."""
    return (index // 2) % proxies


def _retry_invalid_socket(exc: BaseException) -> bool:
    return isinstance(exc, InvalidSocket) or is_retryable_default(exc)


def _wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


class SyncClients:
    """Sync supervisors (a thread each) and application threads (``--sync-per-thread`` each)."""

    def __init__(self, records: list[Record], args: argparse.Namespace) -> None:
        self.records = records
        self.args = args
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, addresses: list[tuple[str, int]], retry: Backoff) -> None:
        from keepalive.sync import Supervisor

        for position, rec in enumerate(self.records):
            options = rec.supervisor_options(self.args.seed, retry)
            rec.sup = Supervisor(addresses[rec.proxy], **options).start()
            if position % 50 == 49:
                time.sleep(0.05)
        per_thread = self.args.sync_per_thread
        for first in range(0, len(self.records), per_thread):
            group = self.records[first : first + per_thread]
            thread = threading.Thread(
                target=sync_app,
                args=(group, self.args.rate, self.args.window, self.stop),
                name=f"soak-app-{group[0].id}",
                daemon=True,
            )
            thread.start()
            self.threads.append(thread)

    def close(self, violations: Violations) -> None:
        self.stop.set()
        for rec in self.records:
            rec.closing = True
            rec.sup.close()
            rec._report(rec.checker.closed(rec.sup.stats.connects))
        for thread in self.threads:
            thread.join(10.0)
        if any(thread.is_alive() for thread in self.threads):
            violations.add("setup", "sync application threads still running after close()")


class AioClients:
    """Asyncio supervisors and their application tasks, on one event loop in a thread."""

    def __init__(self, records: list[Record], args: argparse.Namespace) -> None:
        self.records = records
        self.args = args
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="soak-asyncio")
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, addresses: list[tuple[str, int]], retry: Backoff) -> None:
        from keepalive.aio import Supervisor

        async def start() -> None:
            for position, rec in enumerate(self.records):
                options = rec.supervisor_options(self.args.seed, retry)
                rec.sup = Supervisor(addresses[rec.proxy], **options)
                rec.sup.start()
                app = aio_app(rec, self.args.rate, self.args.window)
                self.tasks.append(asyncio.create_task(app))
                if position % 50 == 49:
                    await asyncio.sleep(0.05)

        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(120.0)

    def close(self, violations: Violations) -> None:
        async def close() -> None:
            for rec in self.records:
                rec.closing = True
            await asyncio.gather(*(rec.sup.aclose() for rec in self.records))
            _, running = await asyncio.wait(self.tasks, timeout=10.0)
            if running:
                violations.add("setup", f"{len(running)} asyncio application tasks still running")
            for rec in self.records:
                rec._report(rec.checker.closed(rec.sup.stats.connects))

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(120.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10.0)


def client_main(args: argparse.Namespace) -> int:
    """A client process: run one kind's supervisors; audit; answer the parent's commands."""
    _raise_nofile()
    emit = _emitter()
    kind = args.client_child
    addresses = [(str(host), int(port)) for host, port in json.loads(args.addresses)]
    retry = RETRY
    if args.retry_invalid_socket:
        retry = Backoff(
            initial=RETRY.initial, max_delay=RETRY.max_delay, retry_on=_retry_invalid_socket
        )
    violations = Violations()
    deaths: deque[tuple[Record, str, float, float]] = deque()
    records = [
        Record(index, kind, proxy_of(index, args.proxies), violations, deaths)
        for index in range(args.connections)
        if kind_of(index) == kind
    ]
    auditor = Auditor(records, args.proxies, violations)
    auditor.deaths = deaths
    auditing = threading.Event()

    def audit() -> None:
        while not auditing.wait(0.1):
            auditor.step(time.monotonic())

    auditor_thread = threading.Thread(target=audit, name="soak-auditor", daemon=True)
    auditor_thread.start()
    clients = SyncClients(records, args) if kind == "sync" else AioClients(records, args)
    clients.start(addresses, retry)
    emit(ev="ready")
    for raw in sys.stdin:
        message = json.loads(raw)
        command = message["cmd"]
        if command == "fault":
            auditor.fault_started(Fault(**message["fault"]))
        elif command == "forward":
            auditor.fault_ended(message["id"], message["t1"])
        elif command == "go":
            auditor.origin = message["t"]
        elif command in ("status", "peek"):
            up = sum(1 for rec in records if rec.stream.accepted)
            emit(ev="status", up=up, **_resources(collect=command == "status"))
        elif command == "stopped":
            t_stop = message["t"]
            _wait_until(
                lambda t=t_stop: all(rec.accepts and rec.accepts[-1] >= t for rec in records),
                HEAL_LIMIT + REPORT_LAG,
            )
            for rec in records:
                first = first_at_or_after(list(rec.accepts), t_stop)
                if first is None or first - t_stop > HEAL_LIMIT:
                    late = "none" if first is None else f"{first - t_stop:.3f} s"
                    violations.add(
                        "heal", f"{rec.kind} #{rec.id}: first echo after the faults: {late}"
                    )
            time.sleep(max(0.0, t_stop + DETECTION_LIMIT + REPORT_LAG + 0.3 - time.monotonic()))
            auditor.step(time.monotonic(), final=True)
            emit(ev="healed")
        elif command == "close":
            auditing.set()
            auditor_thread.join()
            clients.close(violations)
            emit(ev="report", report=client_report(kind, records, auditor, violations))
            break
    return 0


def client_report(
    kind: str, records: list[Record], auditor: Auditor, violations: Violations
) -> dict[str, Any]:
    streams = [rec.stream for rec in records]
    stats = [rec.sup.stats for rec in records]
    return {
        "kind": kind,
        "connections": len(records),
        "death_reasons": dict(auditor.death_reasons),
        "deaths_by_fault": dict(auditor.deaths_by_fault),
        "detection": {
            group: auditor.detection[kind, group].to_json() for group in ("freeze", "reset")
        },
        "heal": auditor.heal[kind].to_json(),
        "resume": auditor.resume.to_json(),
        "heals_late": auditor.heals_late,
        "preempted": auditor.preempted,
        "long_freezes": auditor.long_freezes,
        "freeze_checked": auditor.freeze_deaths_checked,
        "missed": auditor.missed,
        "reconnects": sum(stat.reconnects for stat in stats),
        "attempts": sum(stat.attempts for stat in stats),
        "unpublished": sum(rec.checker.unpublished for rec in records),
        "failed_attempts": sum(rec.checker.failed for rec in records),
        "stream": {
            "lines_echoed": sum(stream.accepted for stream in streams),
            "bytes_echoed": sum(stream.bytes_accepted for stream in streams),
            "lines_sent": sum(stream.lines_sent for stream in streams),
            "lines_resent": sum(stream.lines_resent for stream in streams),
            "cut_lines": sum(stream.cut_lines for stream in streams),
            "cut_bytes": sum(stream.cut_bytes for stream in streams),
            "cut_partial_bytes": sum(stream.cut_partial_bytes for stream in streams),
            "connections": sum(stream.connections for stream in streams),
        },
        "violations": {"counts": dict(violations.counts), "examples": violations.examples},
    }


# ---------------------------------------------------------------------------------------------
# The parent: starts the three processes, relays the fault reports, samples, merges


class Child:
    """A child process speaking JSON lines; fault reports go to ``on_event``."""

    def __init__(
        self, argv: list[str], on_event: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._on_event = on_event
        self._lock = threading.Lock()
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            message = json.loads(raw)
            if self._on_event is not None and message["ev"] in ("fault", "forward"):
                self._on_event(message)
            else:
                self.replies.put(message)
        self.replies.put({"ev": "eof"})

    def send(self, **message: Any) -> None:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()

    def wait(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.replies.get(timeout=max(0.01, deadline - time.monotonic()))
            if message["ev"] == event:
                return message
            if message["ev"] == "eof":
                raise RuntimeError(f"a child process ended while waiting for {event!r}")

    def request(self, command: str, event: str, timeout: float = 60.0) -> dict[str, Any]:
        self.send(cmd=command)
        return self.wait(event, timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send(cmd="exit")
        try:
            self.proc.wait(30.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _pick(status: dict[str, Any]) -> dict[str, int]:
    return {key: status[key] for key in ("fds", "threads", "rss")}


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    wall_started = time.time()
    violations = Violations()  # the parent's own findings (resources, flows, setup)
    clients: dict[str, Child] = {}
    kinds: Counter[str] = Counter()
    flows_hit: Counter[str] = Counter()

    def relay(message: dict[str, Any]) -> None:  # the network process's reader thread
        if message["ev"] == "fault":
            kinds[message["kind"]] += 1
            flows_hit[message["kind"]] += message["flows"]
            fields = ("id", "proxy", "kind", "t0", "t_done", "flows")
            payload = {"cmd": "fault", "fault": {key: message[key] for key in fields}}
        else:
            payload = {"cmd": "forward", "id": message["id"], "t1": message["t1"]}
        for child in clients.values():
            child.send(**payload)

    common = ["--proxies", str(args.proxies), "--seed", str(args.seed)]
    network = Child(["--network-child", *common], on_event=relay)
    report: dict[str, Any] = {}
    try:
        addresses = network.wait("ready", 30.0)["proxies"]
        for kind in ("sync", "asyncio"):
            argv = [
                *("--client-child", kind, "--addresses", json.dumps(addresses), *common),
                *("--connections", str(args.connections), "--rate", str(args.rate)),
                *("--window", str(args.window), "--sync-per-thread", str(args.sync_per_thread)),
            ]
            if args.retry_invalid_socket:
                argv.append("--retry-invalid-socket")
            clients[kind] = Child(argv)
        for child in clients.values():
            child.wait("ready", 120.0)
        processes = {"network": network, **clients}

        def sample(collect: bool) -> dict[str, dict[str, Any]]:
            command = "status" if collect else "peek"
            return {name: child.request(command, "status") for name, child in processes.items()}

        def all_up() -> bool:
            return sum(c.request("peek", "status")["up"] for c in clients.values()) == len(
                range(args.connections)
            )

        if not _wait_until(all_up, 60.0, poll=0.5):
            violations.add("setup", "not every connection echoed a line within 60 s")
        warmup = time.monotonic() - started
        time.sleep(0.5)
        quiet_start = sample(collect=True)

        go = time.monotonic()
        network.send(cmd="go")
        for child in clients.values():
            child.send(cmd="go", t=go)
        duration = args.minutes * 60.0
        early_at = go + min(60.0, duration / 4)
        early: dict[str, Any] = {}
        late: dict[str, Any] = {}
        trajectory: list[dict[str, Any]] = []
        next_sample = go + 10.0
        while True:
            now = time.monotonic()
            if not early and now >= early_at:
                early = {"t": now - go, **sample(collect=True)}
            if not late and now >= go + duration - 1.0:
                late = {"t": now - go, **sample(collect=True)}
            if now >= go + duration:
                break
            if now >= next_sample:
                peek = sample(collect=False)
                trajectory.append(
                    {"t": round(now - go, 1), **{k: _pick(v) for k, v in peek.items()}}
                )
                next_sample += 10.0
            time.sleep(min(0.2, max(0.0, go + duration - now)))

        t_stop = network.request("stop", "stopped", 60.0)["t"]
        for child in clients.values():
            child.send(cmd="stopped", t=t_stop)
        for child in clients.values():
            child.wait("healed", 120.0)

        def settled() -> bool:
            status = network.request("peek", "status")
            flows, echoes = sum(status["flows"]), status["echo_connections"]
            return flows == args.connections and echoes == args.connections

        if not _wait_until(settled, 10.0, poll=0.5):
            status = network.request("peek", "status")
            violations.add(
                "two-live",
                f"after the faults: {sum(status['flows'])} proxy flows and"
                f" {status['echo_connections']} echo connections for {args.connections}",
            )
        quiet_end = sample(collect=True)
        parts = []
        for child in clients.values():
            child.send(cmd="close")
        for child in clients.values():
            parts.append(child.wait("report", 300.0)["report"])

        slack = 4 + args.connections // 100
        for name in processes:
            for key in ("fds", "threads"):
                before, after = quiet_start[name][key], quiet_end[name][key]
                if after - before > slack:
                    violations.add("resources", f"{name} {key}: {before} -> {after} (+{slack})")
            before, after = early[name]["rss"], late[name]["rss"]
            limit = max(16 * MIB, before // 10)
            if after - before > limit:
                violations.add(
                    "resources",
                    f"{name} RSS: {before / MIB:.1f} -> {after / MIB:.1f} MiB"
                    f" (limit +{limit / MIB:.1f} MiB)",
                )
        report = merge(
            args,
            parts,
            violations,
            faults=dict(kinds),
            flows_hit=dict(flows_hit),
            seconds={"warmup": warmup, "faulting": t_stop - go, "total": 0.0},
            resources={
                "quiescent_start": {k: _pick(v) for k, v in quiet_start.items()},
                "quiescent_end": {k: _pick(v) for k, v in quiet_end.items()},
                "first_minute": {"t": early["t"], **{k: _pick(early[k]) for k in processes}},
                "last_minute": {"t": late["t"], **{k: _pick(late[k]) for k in processes}},
                "samples": trajectory,
            },
            network=quiet_end["network"],
        )
    finally:
        for child in clients.values():
            child.close()
        network.close()
    if report:
        report["seconds"]["total"] = time.monotonic() - started
        report["machine"] = {
            "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(wall_started)),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "load_after": " ".join(f"{load:.1f}" for load in os.getloadavg()),
        }
    print_report(report)
    if args.json and report:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2, sort_keys=True)
            out.write("\n")
    return 1 if not report or report["violations"]["total"] else 0


def merge(
    args: argparse.Namespace,
    parts: list[dict[str, Any]],
    own: Violations,
    *,
    faults: dict[str, int],
    flows_hit: dict[str, int],
    seconds: dict[str, float],
    resources: dict[str, Any],
    network: dict[str, Any],
) -> dict[str, Any]:
    """One report from the client processes' reports and the parent's own findings."""
    by_kind = {part["kind"]: part for part in parts}

    def total(key: str) -> int:
        return sum(part[key] for part in parts)

    def counter(key: str) -> dict[str, int]:
        merged: Counter[str] = Counter()
        for part in parts:
            merged.update(part[key])
        return dict(merged)

    detection = {
        f"{kind}_{group}": Histogram.from_json(part["detection"][group])
        for kind, part in by_kind.items()
        for group in ("freeze", "reset")
    }
    heal = {kind: Histogram.from_json(part["heal"]) for kind, part in by_kind.items()}
    resume = Histogram()
    detection_all = Histogram()
    for part in parts:
        resume = resume.merge(Histogram.from_json(part["resume"]))
    for histogram in detection.values():
        detection_all = detection_all.merge(histogram)
    heal_all = heal["sync"].merge(heal["asyncio"])
    counts: Counter[str] = Counter(own.counts)
    examples = list(own.examples)
    for part in parts:
        counts.update(part["violations"]["counts"])
        examples += part["violations"]["examples"]
    stream = {key: sum(part["stream"][key] for part in parts) for key in parts[0]["stream"]}
    return {
        "command": {
            "connections": args.connections,
            "minutes": args.minutes,
            "seed": args.seed,
            "proxies": args.proxies,
            "rate": args.rate,
            "window": args.window,
            "sync_per_thread": args.sync_per_thread,
            "retry_invalid_socket": args.retry_invalid_socket,
        },
        "settings": {
            "heartbeat": {"interval": HEARTBEAT.interval, "timeout": HEARTBEAT.timeout},
            "detection_bound": HEARTBEAT.detection_bound,
            "detection_limit": DETECTION_LIMIT,
            "backoff": {"initial": RETRY.initial, "max_delay": RETRY.max_delay},
            "healthy_after": HEALTHY_AFTER,
            "heal_limit": HEAL_LIMIT,
        },
        "seconds": seconds,
        "connections": {kind: part["connections"] for kind, part in by_kind.items()},
        "faults": faults,
        "flows_hit": flows_hit,
        "deaths": {
            "total": sum(counter("death_reasons").values()),
            "by_reason": counter("death_reasons"),
            "by_fault": counter("deaths_by_fault"),
            **{kind: sum(part["death_reasons"].values()) for kind, part in by_kind.items()},
        },
        "detection": {
            "all": detection_all.summary(),
            **{key: histogram.summary() for key, histogram in detection.items()},
        },
        "freezes_longer_than_limit": max(part["long_freezes"] for part in parts),
        "freeze_connections_checked": total("freeze_checked"),
        "missed": total("missed"),
        "reconnects": total("reconnects"),
        "attempts": total("attempts"),
        "unpublished": total("unpublished"),
        "failed_attempts": total("failed_attempts"),
        "heal": {
            "all": heal_all.summary(),
            **{kind: histogram.summary() for kind, histogram in heal.items()},
            "survived": resume.summary(),
            "late": total("heals_late"),
            "preempted": total("preempted"),
        },
        "stream": stream,
        "network": {key: network[key] for key in ("accepted", "refused", "bytes_discarded")},
        "resources": resources,
        "violations": {
            "total": sum(counts.values()),
            "by_kind": dict(counts),
            "examples": examples,
        },
    }


def _seconds(summary: dict[str, Any]) -> str:
    if not summary["count"]:
        return "-"
    return f"{summary['median']:.3f} / {summary['p99']:.3f} / {summary['max']:.3f} s"


def _mib(value: int) -> str:
    return f"{value / MIB:.1f}"


def report_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary of a finished run's report, as (measure, result) rows."""
    command, settings, seconds = report["command"], report["settings"], report["seconds"]
    faults, deaths, stream = report["faults"], report["deaths"], report["stream"]
    detection, heal, resources = report["detection"], report["heal"], report["resources"]
    start, end = resources["quiescent_start"], resources["quiescent_end"]
    first, last = resources["first_minute"], resources["last_minute"]
    rows = [
        (
            "connections",
            f"{command['connections']} (sync {report['connections']['sync']},"
            f" asyncio {report['connections']['asyncio']}) via {command['proxies']} proxies,"
            f" {command['rate']:g} lines/s each",
        ),
        (
            "duration",
            f"{seconds['faulting']:.0f} s of faults"
            f" ({seconds['total']:.0f} s in all, warm-up {seconds['warmup']:.1f} s)",
        ),
        (
            "faults injected",
            f"{sum(faults.values())}: "
            + ", ".join(f"{kind} {faults.get(kind, 0)}" for kind in FAULT_KINDS),
        ),
        (
            "deaths detected",
            f"{deaths['total']} (sync {deaths['sync']}, asyncio {deaths['asyncio']}): "
            + ", ".join(f"{reason} {n}" for reason, n in sorted(deaths["by_reason"].items())),
        ),
        (
            "detection med/p99/max",
            f"{_seconds(detection['all'])} (limit {settings['detection_limit']:.2f} s)",
        ),
        ("  sync, freeze", _seconds(detection["sync_freeze"])),
        ("  asyncio, freeze", _seconds(detection["asyncio_freeze"])),
        ("  sync, reset/refuse", _seconds(detection["sync_reset"])),
        ("  asyncio, reset/refuse", _seconds(detection["asyncio_reset"])),
        (
            "freezes > limit",
            f"{report['freezes_longer_than_limit']}: {report['freeze_connections_checked']}"
            f" live connections checked, {report['missed']} missed",
        ),
        (
            "reconnects",
            f"{report['reconnects']} ({report['attempts']} attempts, {report['unpublished']}"
            f" ended during on_connect, {report['failed_attempts']} failed before it)",
        ),
        (
            "heal med/p99/max",
            f"{_seconds(heal['all'])} (limit {settings['heal_limit']:.2f} s;"
            f" {heal['all']['count']} heals)",
        ),
        ("  sync", _seconds(heal["sync"])),
        ("  asyncio", _seconds(heal["asyncio"])),
        ("  resumed (survived)", f"{_seconds(heal['survived'])} ({heal['survived']['count']})"),
        (
            "echoed",
            f"{stream['lines_echoed']:,} lines, {stream['bytes_echoed']:,} bytes,"
            f" on {stream['connections']:,} connections",
        ),
        (
            "cut at disconnects",
            f"{stream['cut_lines']:,} lines ({stream['cut_bytes']:,} bytes, of which"
            f" {stream['cut_partial_bytes']:,} partly echoed), {stream['lines_resent']:,} resent",
        ),
    ]
    for name in ("sync", "asyncio", "network"):
        rows.append(
            (
                f"{name} fds/threads/RSS",
                f"{start[name]['fds']}/{start[name]['threads']} -> {end[name]['fds']}/"
                f"{end[name]['threads']} (before/after faults); RSS {_mib(first[name]['rss'])}"
                f" MiB at {first['t']:.0f} s -> {_mib(last[name]['rss'])} MiB at {last['t']:.0f} s",
            )
        )
    by_kind = report["violations"]["by_kind"]
    rows.append(
        (
            "violations",
            str(report["violations"]["total"])
            + (" (" + ", ".join(f"{k} {v}" for k, v in by_kind.items()) + ")" if by_kind else ""),
        )
    )
    return rows


def report_settings(report: dict[str, Any]) -> str:
    """One line: the heartbeat, backoff and seed of a run."""
    command, settings = report["command"], report["settings"]
    beat, backoff = settings["heartbeat"], settings["backoff"]
    return (
        f"heartbeat {beat['interval']:g}/{beat['timeout']:g} s"
        f" (bound {settings['detection_bound']:.2f} s), backoff"
        f" {backoff['initial']:g}..{backoff['max_delay']:g} s, seed {command['seed']}"
        + (", --retry-invalid-socket" if command["retry_invalid_socket"] else "")
    )


def print_report(report: dict[str, Any]) -> None:
    if not report:
        print("soak: no report (the run did not finish)")
        return
    rows = report_rows(report)
    print(f"soak: {report_settings(report)}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for example in report["violations"]["examples"]:
        print(f"  ! {example}")
    print("PASS" if not report["violations"]["total"] else "FAIL")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--proxies", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5.0, help="lines per second per connection")
    parser.add_argument("--window", type=int, default=8, help="lines in flight at most")
    parser.add_argument(
        "--sync-per-thread", type=int, default=10, help="sync connections per application thread"
    )
    parser.add_argument(
        "--retry-invalid-socket",
        action="store_true",
        help="retry InvalidSocket too (works around sync supervisors giving up when a"
        " connection is reset between connect and the heartbeat's start)",
    )
    parser.add_argument("--network-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client-child", choices=("sync", "asyncio"), help=argparse.SUPPRESS)
    parser.add_argument("--addresses", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.network_child:
        return network_main(args.proxies, args.seed)
    if args.client_child:
        return client_main(args)
    if not sys.platform.startswith("linux"):
        print("soak: Linux only (/proc/self/fd)", file=sys.stderr)
        return 2
    if args.connections < 2 or args.proxies < 1 or args.minutes <= 0 or args.rate <= 0:
        parser.error("need --connections >= 2, --proxies >= 1, --minutes > 0, --rate > 0")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
