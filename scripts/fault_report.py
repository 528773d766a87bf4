#!/usr/bin/env python3
"""Measure every layer of keepalive against real faults and write docs/reliability.md.

    python3 scripts/fault_report.py                 # the documented run: 5 repetitions, ~6.5 min
    python3 scripts/fault_report.py --quick         # one repetition, ~90 s (the tests run it)
    python3 scripts/fault_report.py --json out.json # also every measurement, machine-readable
    python3 scripts/fault_report.py --chart-json c.json  # the chart's numbers (see below)
    python3 scripts/fault_report.py --only loss --repetitions 3 --output /tmp/r.md  # one row

Rows are faults produced for real on this machine: a peer host black-holed and a lossy path
(nftables in private network namespaces, as tests/netns.py does), a proxying NAT that loses the
server (keepalive.testing.FaultProxy frozen, and socat stopped with SIGSTOP), a killed server
process, a middlebox that forgets idle flows, and peers that misbehave on purpose (busy,
trickling, flooding pongs, a partial pong). Columns are the library's layers: kernel keepalive,
kernel keepalive with TCP_USER_TIMEOUT, the heartbeat (blocking and asyncio drivers) and the
blocking Supervisor.

Every cell measures: the detection time against the layer's documented bound
(``KeepaliveConfig.detection_bound``, ``HeartbeatConfig.detection_bound``: from the last inbound
byte to the verdict), false verdicts on a healthy connection, the bytes of a counted,
checksummed application stream that did not reach the application before the verdict, and for
the Supervisor the reconnect once the fault is lifted. Open descriptors and threads of this
process are compared before and after each row (its cells run concurrently, one connection
each), so nothing may leak.

The documented run also writes docs/data/fault-report.json (``--chart-json``): per scenario
and layer, the median and maximum detection time against the bound, from which
``scripts/draw_pictures.py`` draws docs/images/fault-detection.svg.

Exit status 1 when any layer did not behave as documented: a detection later than its bound
plus 0.5 s (or sooner than the bound, or none at all), a verdict on a healthy connection where
none is expected, a lost or altered byte, or more descriptors or threads after a row than
before. Only loopback addresses and namespaces this script creates are ever used. Without
root (or nft), the namespace rows are reported as not run; KEEPALIVE_REQUIRE_NETNS=1 makes that
a failure, as in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import datetime
import errno
import fcntl
import gc
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

from keepalive import Backoff, KeepaliveConfig, configure  # noqa: E402 - ROOT on sys.path first
from keepalive._tcp_info import receive_window  # noqa: E402
from keepalive.aio import HeartbeatProtocol, monitor_of, open_connection  # noqa: E402
from keepalive.errors import PeerUnresponsive  # noqa: E402
from keepalive.heartbeat import HeartbeatConfig  # noqa: E402
from keepalive.supervision import DisconnectReason  # noqa: E402
from keepalive.sync import MonitoredSocket, SupervisedSocket, Supervisor, monitor  # noqa: E402
from keepalive.testing import EchoServer, FaultProxy  # noqa: E402

OUTPUT = ROOT / "docs" / "reliability.md"
# The detection-time chart's numbers, written with the documented report.
CHART_DATA = ROOT / "docs" / "data" / "fault-report.json"
CHART_PICTURE = "images/fault-detection.svg"  # relative to docs/, drawn by draw_pictures.py
CHART_FORMAT = 1  # bumped when the chart data's keys change meaning
# The long soak's results (benchmarks/soak.py --json), rendered into the report's soak section.
SOAK_RESULTS = ROOT / "docs" / "data" / "soak-long.json"
SOAK_SCRIPT = ROOT / "benchmarks" / "soak.py"
REQUIRE_NETNS_ENV = "KEEPALIVE_REQUIRE_NETNS"
REQUIRE_INTEGRATIONS_ENV = "KEEPALIVE_REQUIRE_INTEGRATIONS"

#: A detection may come this much later than its documented bound before the run fails.
SLACK = 0.5
#: How much sooner than the bound a verdict may be measured (clock reading, kernel jiffies).
EARLY = {"kernel": 0.25, "heartbeat": 0.02}
#: Kernel layers that are documented never to see a fault are watched for 3x their bound.
UNSEEN_FACTOR = 3
#: Hard limit for one cell (its own waits are shorter; this only catches a hang).
CELL_TIMEOUT = 90.0
LOCALHOST = "127.0.0.1"

# ---------------------------------------------------------------------------------------------
# Layers, profiles, expectations

KERNEL = "kernel"
KERNEL_UT = "kernel_ut"
HB_SYNC = "hb_sync"
HB_AIO = "hb_aio"
SUPERVISED = "supervised"
LAYERS = (KERNEL, KERNEL_UT, HB_SYNC, HB_AIO, SUPERVISED)
LAYER_TITLES = {
    KERNEL: "kernel keepalive",
    KERNEL_UT: "kernel + user timeout",
    HB_SYNC: "heartbeat (sync)",
    HB_AIO: "heartbeat (asyncio)",
    SUPERVISED: "supervised (sync)",
}

DETECT = "detect"  # the layer must reach a verdict within its bound
UNSEEN = "unseen"  # documented blind spot: no verdict may come within 3x the bound
ALIVE = "alive"  # a healthy (if odd) peer: no verdict at all
DOCUMENT = "document"  # behaviour recorded as it is; a verdict is allowed (see the note)
NOT_APPLICABLE = "n/a"


@dataclass(frozen=True)
class Profile:
    """Configurations and durations of one run."""

    name: str
    repetitions: int
    heartbeat: HeartbeatConfig
    lossy_heartbeat: HeartbeatConfig
    kernel: KeepaliveConfig
    kernel_user_timeout: KeepaliveConfig
    observe: float  # seconds a healthy connection is watched
    loss_observe: float
    slow_pause: float  # seconds the application stops reading
    idle_drop: float  # the middlebox forgets flows silent this long
    fill_repetitions: int  # of the receive-buffer probe (eight read sizes each)

    def bound(self, layer: str, *, lossy: bool = False) -> float:
        beat = self.lossy_heartbeat if lossy else self.heartbeat
        if layer == KERNEL:
            return self.kernel.detection_bound
        if layer == KERNEL_UT:
            return self.kernel_user_timeout.detection_bound
        return beat.detection_bound


QUICK = Profile(
    name="quick",
    repetitions=1,
    heartbeat=HeartbeatConfig(interval=0.2, timeout=0.3),
    # Sane for 25 % loss: TCP may need seconds (a retransmission timeout of at least 0.2 s,
    # doubling) to get a segment through, so two misses of a 2.5 s timeout.
    lossy_heartbeat=HeartbeatConfig(interval=0.5, timeout=2.5, misses=2),
    kernel=KeepaliveConfig(idle=1, interval=1, count=2),
    kernel_user_timeout=KeepaliveConfig(idle=1, interval=1, count=2, user_timeout=2),
    observe=4.0,
    loss_observe=10.0,
    slow_pause=2.0,
    idle_drop=1.0,
    fill_repetitions=1,
)
DEFAULT = dataclasses.replace(QUICK, name="default", repetitions=5, fill_repetitions=3)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class CellResult:
    """One run of one layer against one fault."""

    scenario: str
    layer: str
    repetition: int
    expectation: str
    bound: float | None = None
    detection: float | None = None  # seconds from the anchor (last inbound byte, or the fault)
    verdict: str = ""  # what the application saw: the error or end of stream
    watched: float | None = None  # seconds a connection was watched for a verdict
    false_positives: int = 0
    bytes_expected: int = 0
    bytes_lost: int = 0
    bytes_altered: int = 0  # received bytes that are not the expected stream
    reconnect: float | None = None  # supervised: seconds from lifting the fault to a working echo
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reason: str = ""  # why the cell is n/a

    def problem(self, text: str) -> None:
        self.problems.append(text)


@dataclass
class Resources:
    fds: int
    threads: int


@dataclass
class RowResult:
    key: str
    title: str
    how: str
    promise: str
    cells: list[CellResult]
    before: Resources
    after: Resources
    seconds: float
    skipped: str = ""  # why the whole row did not run

    @property
    def leaked(self) -> bool:
        return self.after.fds > self.before.fds or self.after.threads > self.before.threads


@dataclass
class Report:
    command: str
    profile: str
    repetitions: int
    date: str
    machine: dict[str, str]
    configs: dict[str, str]
    bounds: dict[str, float]
    rows: list[RowResult]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    start: Resources | None = None  # the process before the first row and after the last
    end: Resources | None = None
    fill: list[FillTrial] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found: list[str] = []
        if (
            self.start
            and self.end
            and (self.end.fds > self.start.fds or self.end.threads > self.start.threads)
        ):
            found.append(
                f"the run as a whole: fds {self.start.fds} -> {self.end.fds}, threads "
                f"{self.start.threads} -> {self.end.threads}"
            )
        for row in self.rows:
            for cell in row.cells:
                found.extend(
                    f"{row.key} / {LAYER_TITLES[cell.layer]} (run {cell.repetition + 1}): {text}"
                    for text in cell.problems
                )
            if row.leaked:
                found.append(
                    f"{row.key}: resources grew: fds {row.before.fds} -> {row.after.fds}, "
                    f"threads {row.before.threads} -> {row.after.threads}"
                )
        return found


def resources() -> Resources:
    """Open descriptors and threads (all of them, not only Python's) of this process."""
    fds = len(os.listdir("/proc/self/fd")) - 1  # minus the descriptor listdir itself used
    threads = 0
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
    return Resources(fds, threads)


def settled_resources(before: Resources, wait: float = 5.0) -> Resources:
    """Resources once background threads had time to end (at most ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        gc.collect()
        now = resources()
        if (now.fds <= before.fds and now.threads <= before.threads) or (
            time.monotonic() >= deadline
        ):
            return now
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# The application stream: numbered, checksummed records


def record(seq: int) -> bytes:
    """``R000042 1a2b3c4d\\n``: a sequence number and the CRC-32 of its digits."""
    digits = b"%06d" % seq
    return b"R" + digits + b" %08x\n" % zlib.crc32(digits)


def compare(expected: bytes, got: bytes) -> tuple[int, int]:
    """(bytes of ``expected`` missing from ``got``, bytes of ``got`` that are not expected)."""
    common = 0
    limit = min(len(expected), len(got))
    step = 4096
    while common < limit:  # the common prefix, a block at a time
        end = min(common + step, limit)
        if expected[common:end] == got[common:end]:
            common = end
            continue
        while expected[common] == got[common]:
            common += 1
        break
    return len(expected) - common, len(got) - common


# ---------------------------------------------------------------------------------------------
# Private network namespaces (the tests/netns.py way: per thread, nftables at the input hook)

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ_FLAGS = struct.Struct("16sH22x")
NFT_TABLE = "keepalive_fault_report"
_NFT_BASE = f"""
table inet {NFT_TABLE} {{
    chain input {{
        type filter hook input priority filter; policy accept;
    }}
}}
"""
_OUTER_NETNS = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino


def _netns_inode() -> int:
    return os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino


def _unshare_net() -> None:
    native: Callable[[int], None] | None = getattr(os, "unshare", None)  # Python 3.12+
    if native is not None:
        native(CLONE_NEWNET)
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
        request = _IFREQ_FLAGS.pack(b"lo", 0)
        _, flags = _IFREQ_FLAGS.unpack(fcntl.ioctl(control, _SIOCGIFFLAGS, request))
        fcntl.ioctl(control, _SIOCSIFFLAGS, _IFREQ_FLAGS.pack(b"lo", flags | _IFF_UP))


class PrivateNetns:
    """Moves the calling thread (for good: use a thread of its own) into a new network
    namespace with its loopback up. Sockets and threads it creates afterwards live there."""

    def __init__(self) -> None:
        _unshare_net()
        self.inode = _netns_inode()
        if self.inode == _OUTER_NETNS:
            raise RuntimeError("unshare(CLONE_NEWNET) left the thread in its namespace")
        _loopback_up()
        self._table = False

    def nft(self, script: str) -> None:
        """Run an nftables script here; refuses to run outside this private namespace."""
        current = _netns_inode()
        if current != self.inode or current == _OUTER_NETNS:
            raise RuntimeError("refusing to run nft outside the private namespace")
        nft = shutil.which("nft")
        if nft is None:
            raise OSError(errno.ENOENT, "nft not found")
        done = subprocess.run(
            [nft, "-f", "-"], input=script, capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise OSError(errno.EINVAL, f"nft failed: {done.stderr.strip()}")

    def drop(self, port: int, percent: int | None = None) -> None:
        """Drop the segments of ``port`` in both directions (all, or a random ``percent``)."""
        condition = "" if percent is None else f" numgen random mod 100 < {percent}"
        script = "" if self._table else _NFT_BASE
        for match in (f"tcp dport {port}", f"tcp sport {port}"):
            script += f"add rule inet {NFT_TABLE} input {match}{condition} counter drop\n"
        self.nft(script)
        self._table = True

    def heal(self) -> None:
        if self._table:
            self.nft(f"flush chain inet {NFT_TABLE} input\n")


def netns_unavailable() -> str | None:
    """Why private namespaces with nftables cannot be used here (probed in a throwaway
    thread whose namespace dies with it), or None."""
    if sys.platform != "linux":
        return f"network namespaces need Linux (this is {sys.platform})"
    if shutil.which("nft") is None:
        return "nft (nftables) not found on PATH"
    problems: list[str] = []

    def probe() -> None:
        try:
            namespace = PrivateNetns()
            namespace.drop(9, 25)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            problems.append(f"private network namespaces unusable: {exc}")

    thread = threading.Thread(target=probe, name="netns-probe", daemon=True)
    thread.start()
    thread.join(30)
    return problems[0] if problems else None


# ---------------------------------------------------------------------------------------------
# Peers


def _send_all(sock: socket.socket, data: bytes, stop: threading.Event) -> int:
    """Write ``data`` to a non-blocking socket until done or ``stop``; return bytes written."""
    view = memoryview(data)
    done = 0
    while done < len(view) and not stop.is_set():
        try:
            done += sock.send(view[done:])
        except BlockingIOError:
            select.select([], [sock], [], 0.05)
        except OSError:
            break
    return done


class _PeerConnection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()  # one writer at a time: messages are never interleaved
        self.sent = bytearray()  # the peer's own stream (busy, bulk, trickle modes)
        self.armed = False  # partial: the next ping gets half a pong
        self.silent = False


class Peer:
    """A scripted peer on 127.0.0.1, in the calling thread's namespace.

    Modes: ``echo`` (lines echoed, ``PING`` answered ``PONG``); ``flood`` (echo, plus bursts of
    unsolicited ``PONG`` lines every ``period``); ``partial`` (echo until :meth:`arm`, then the
    next ping is answered ``PO`` and nothing is ever sent again on that connection);
    ``busy`` (a burst of records every ``period``, pings never answered); ``bulk`` (records
    as fast as the connection takes them, pings never answered); ``trickle`` (one byte every
    ``period``, pings never answered).
    """

    FLOOD_BURST = 100

    def __init__(self, mode: str, *, period: float = 0.0, burst: int = 0) -> None:
        self.mode = mode
        self.period = period
        self.burst = burst
        self.listener = socket.create_server((LOCALHOST, 0))
        self.listener.settimeout(0.05)
        self.address = (LOCALHOST, int(self.listener.getsockname()[1]))
        self.connections: list[_PeerConnection] = []
        self.answered = 0
        self.unsolicited = 0
        self._quiet = threading.Event()  # stop producing (stream and flood modes)
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._producers: list[threading.Thread] = []
        self._start(self._accept, "accept")

    def _start(self, target: Callable[..., None], name: str, *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=f"peer-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def arm(self) -> None:
        for connection in self.connections:
            connection.armed = True

    def quiet(self) -> None:
        """Stop producing data of the peer's own and wait until the last write is done
        (answers and echoes go on)."""
        self._quiet.set()
        for thread in list(self._producers):
            thread.join(10)

    def sent(self, index: int = 0) -> bytes:
        connection = self.connections[index]
        with connection.lock:
            return bytes(connection.sent)

    def close(self) -> None:
        self._closing.set()
        self._quiet.set()
        for thread in self._threads:
            thread.join(5)
        for connection in self.connections:
            connection.sock.close()
        self.listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _PeerConnection(sock)
            self.connections.append(connection)
            self._start(self._serve, "serve", connection)
            if self.mode in ("busy", "bulk", "trickle", "flood"):
                self._producers.append(self._start(self._produce, "produce", connection))

    def _write(self, connection: _PeerConnection, data: bytes, *, own: bool = False) -> None:
        with connection.lock:
            written = _send_all(connection.sock, data, self._closing)
            if own:
                connection.sent += data[:written]

    def _serve(self, connection: _PeerConnection) -> None:
        held = b""
        echo = self.mode in ("echo", "flood", "partial")
        while not self._closing.is_set():
            readable, _, _ = select.select([connection.sock], [], [], 0.05)
            if not readable:
                continue
            try:
                data = connection.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return
            if not echo or connection.silent:
                continue  # read and discarded: pings are never answered
            *lines, held = (held + data).split(b"\n")
            out = bytearray()
            for line in lines:
                if line != b"PING":
                    out += line + b"\n"
                elif connection.armed:
                    out += b"PO"  # half a pong, then silence for good
                    connection.silent = True
                    break
                else:
                    out += b"PONG\n"
                    self.answered += 1
            if out:
                self._write(connection, bytes(out))

    def _produce(self, connection: _PeerConnection) -> None:
        seq = 0
        while not self._quiet.is_set():
            if self.mode == "trickle":
                self._write(connection, b"%d" % (seq % 10) if seq % 11 else b"\n", own=True)
                seq += 1
            elif self.mode == "flood":
                self._write(connection, b"PONG\n" * self.FLOOD_BURST)
                self.unsolicited += self.FLOOD_BURST
            else:
                chunk = bytearray()
                while len(chunk) < self.burst:
                    chunk += record(seq)
                    seq += 1
                self._write(connection, bytes(chunk), own=True)
            if self.period:
                self._quiet.wait(self.period)


_CHILD_SERVER = r"""
import selectors, socket, sys
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print(listener.getsockname()[1], flush=True)
selector = selectors.DefaultSelector()
selector.register(listener, selectors.EVENT_READ)
held = {}
while True:
    for key, _ in selector.select():
        if key.fileobj is listener:
            conn, _ = listener.accept()
            held[conn] = b""
            selector.register(conn, selectors.EVENT_READ)
            continue
        conn = key.fileobj
        data = conn.recv(65536)
        if not data:
            selector.unregister(conn)
            conn.close()
            continue
        *lines, held[conn] = (held[conn] + data).split(b"\n")
        conn.sendall(b"".join(b"PONG\n" if l == b"PING" else l + b"\n" for l in lines))
"""


class ChildServer:
    """An echo server (PING answered PONG) in a child process, to be killed."""

    def __init__(self, port: int = 0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD_SERVER, str(port)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        with self.process.stdout:
            line = self.process.stdout.readline()
        if not line.strip():
            self.process.kill()
            self.process.wait()
            raise RuntimeError("the child server did not start")
        self.address = (LOCALHOST, int(line))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


class SocatRelay:
    """socat relaying a loopback port to ``upstream``; :meth:`stop` freezes it with SIGSTOP."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        tool = shutil.which("socat")
        if tool is None:
            raise RuntimeError("socat is not installed")
        with socket.socket() as probe:
            probe.bind((LOCALHOST, 0))
            port = int(probe.getsockname()[1])
        self.address = (LOCALHOST, port)
        self.process = subprocess.Popen(
            [
                tool,
                f"TCP-LISTEN:{port},bind={LOCALHOST},reuseaddr,fork",
                f"TCP:{upstream[0]}:{upstream[1]}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:  # listening yet? (A probe connection that socat serves and closes.)
            try:
                with socket.create_connection(self.address, 1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("socat did not start listening") from None
                time.sleep(0.02)

    def _signal(self, signum: int) -> None:
        for pid in [*_children(self.process.pid), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self) -> None:
        self._signal(signal.SIGSTOP)

    def cont(self) -> None:
        self._signal(signal.SIGCONT)

    def close(self) -> None:
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---------------------------------------------------------------------------------------------
# The application's side of one connection, per layer, behind one blocking facade


@dataclass
class Outcome:
    kind: str  # "eof" or "error"
    detail: str
    at: float


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PeerUnresponsive):
        return "PeerUnresponsive"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def _unread(fd: int) -> int:
    try:
        count: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, bytes(4)))[0]
    except OSError:
        return 0
    return count


class AppClient:
    """Connects, sends, reads in the background (unless paused) and records what happens."""

    def __init__(self, beat: HeartbeatConfig, profile: Profile) -> None:
        self.beat = beat
        self.profile = profile
        self.sent = bytearray()
        self._received = bytearray()
        self._changed = threading.Condition()
        self.connected_at = time.monotonic()
        self.last_rx = self.connected_at
        self.outcome: Outcome | None = None
        self.dead_at: float | None = None  # the heartbeat's verdict (on_dead) or disconnect
        self.reading = threading.Event()
        self.reading.set()
        self.closing = False

    # -- for subclasses ----------------------------------------------------------------------

    def _got(self, data: bytes) -> None:
        with self._changed:
            self._received += data
            self.last_rx = time.monotonic()
            self._changed.notify_all()

    def _ended(self, kind: str, detail: str) -> None:
        with self._changed:
            if self.outcome is None and not self.closing:
                self.outcome = Outcome(kind, detail, time.monotonic())
            self._changed.notify_all()

    def _died(self) -> None:
        with self._changed:
            if self.dead_at is None and not self.closing:
                self.dead_at = time.monotonic()
            self._changed.notify_all()

    # -- for scenarios -----------------------------------------------------------------------

    def connect(self, address: tuple[str, int]) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def anchor(self) -> float:
        """The last inbound byte, as the layer measures it (its bound starts there)."""
        return self.last_rx

    def fileno(self) -> int:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {}

    def stop_heartbeat(self) -> None:
        """Stop pinging (pongs of pings already sent are still taken)."""

    def close(self) -> None:
        raise NotImplementedError

    def send_records(self, first: int, count: int) -> int:
        for seq in range(first, first + count):
            data = record(seq)
            self.send(data)
            self.sent += data
        return first + count

    def received(self) -> bytes:
        with self._changed:
            return bytes(self._received)

    @property
    def verdict_at(self) -> float | None:
        times = [t for t in (self.dead_at, self.outcome and self.outcome.at) if t]
        return min(times) if times else None

    def wait_received(self, size: int, timeout: float) -> bool:
        with self._changed:
            self._changed.wait_for(
                lambda: len(self._received) >= size or self.outcome is not None, timeout
            )
            return len(self._received) >= size

    def wait_verdict(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.verdict_at is not None, timeout)

    def wait_outcome(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.outcome is not None, timeout)

    def unread(self) -> tuple[int, int]:
        """(bytes waiting unread in the kernel, SO_RCVBUF); zeros once the socket is closed."""
        try:
            fd = self.fileno()
            with socket.socket(fileno=os.dup(fd)) as sock:
                return _unread(fd), sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except OSError:
            return 0, 0


class _ThreadReader(AppClient):
    """A blocking socket (plain or monitored) read by a thread of its own."""

    sock: socket.socket | MonitoredSocket

    def _start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read, name="app-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            self.reading.wait()
            if self.closing:
                return
            try:
                data = self.sock.recv(65536)
            except OSError as exc:
                self._ended("error", _describe(exc))
                return
            if not data:
                self._ended("eof", "end of stream")
                return
            self._got(data)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def fileno(self) -> int:
        return self.sock.fileno()


class KernelClient(_ThreadReader):
    """A plain socket with kernel keepalive (and maybe TCP_USER_TIMEOUT) configured."""

    def __init__(self, beat: HeartbeatConfig, profile: Profile, config: KeepaliveConfig) -> None:
        super().__init__(beat, profile)
        self.config = config

    def connect(self, address: tuple[str, int]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            configure(sock, self.config)
            sock.settimeout(5)
            sock.connect(address)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.connected_at = self.last_rx = time.monotonic()
        self._start_reader()

    def close(self) -> None:
        self.closing = True
        self.reading.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        self._reader.join(5)
        self.sock.close()


class HeartbeatSyncClient(_ThreadReader):
    """``keepalive.sync.monitor`` on a plain socket (no kernel keepalive: the layer alone)."""

    sock: MonitoredSocket

    def connect(self, address: tuple[str, int]) -> None:
        raw = socket.create_connection(address, timeout=5)
        raw.settimeout(None)
        self.sock = monitor(raw, heartbeat=self.beat, on_dead=lambda _s, _e: self._died())
        self.connected_at = self.last_rx = time.monotonic()
        self._start_reader()

    def anchor(self) -> float:
        return self.sock.heartbeat.last_received

    def stats(self) -> dict[str, Any]:
        stats = self.sock.stats
        return {
            "pings": stats.pings_sent,
            "pongs": stats.pongs_received,
            "unread_life": stats.unread_life,
            "stalls": stats.stalls,
        }

    def stop_heartbeat(self) -> None:
        self.sock.stop()

    def close(self) -> None:
        self.closing = True
        self.reading.set()
        self.sock.close()  # threads blocked on it wake up with EBADF
        self._reader.join(5)


class HeartbeatAioClient(AppClient):
    """``keepalive.aio.open_connection`` on an event loop in a thread of its own (created by
    the cell's thread, so in its network namespace)."""

    def connect(self, address: tuple[str, int]) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="app-loop", daemon=True)
        self._thread.start()
        self._call(self._open(address))
        self.connected_at = self.last_rx = time.monotonic()

    def _call(self, coroutine: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _open(self, address: tuple[str, int]) -> None:
        self._resume = asyncio.Event()
        self._resume.set()
        self.reader, self.writer = await open_connection(
            address[0], address[1], heartbeat=self.beat, on_dead=lambda _m, _e: self._died()
        )
        found = monitor_of(self.writer)
        assert isinstance(found, HeartbeatProtocol)
        self.monitor = found
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            await self._resume.wait()
            try:
                data = await self.reader.read(65536)
            except (OSError, PeerUnresponsive) as exc:
                self._ended("error", _describe(exc))
                return
            if not data:
                self._ended("eof", "end of stream")
                return
            self._got(data)

    def send(self, data: bytes) -> None:
        async def write() -> None:
            self.writer.write(data)
            await self.writer.drain()

        self._call(write())

    def pause(self, paused: bool) -> None:
        self.loop.call_soon_threadsafe(self._resume.clear if paused else self._resume.set)

    def anchor(self) -> float:
        last = self.monitor.last_received
        return self.last_rx if last is None else last

    def fileno(self) -> int:
        sock = self.writer.get_extra_info("socket")
        return -1 if sock is None else int(sock.fileno())

    def stats(self) -> dict[str, Any]:
        stats = self.monitor.stats
        return {
            "pings": stats.pings_sent,
            "pongs": stats.pongs_received,
            "unread_life": stats.unread_life,
            "stalls": stats.stalls,
        }

    def stop_heartbeat(self) -> None:
        self.loop.call_soon_threadsafe(self.monitor.stop)

    def unread(self) -> tuple[int, int]:
        sock = self.writer.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return 0, 0
        return _unread(sock.fileno()), int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def close(self) -> None:
        self.closing = True

        async def shut() -> None:
            self._task.cancel()
            self.writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

        try:
            self._call(shut())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()


class SupervisedClient(_ThreadReader):
    """A ``keepalive.sync.Supervisor`` with the heartbeat and kernel keepalive: the whole
    stack. The first connection carries the measured stream."""

    conn: SupervisedSocket

    def connect(self, address: tuple[str, int]) -> None:
        self.disconnects: list[tuple[float, str]] = []
        self.supervisor = Supervisor(
            address,
            keepalive=self.profile.kernel,
            heartbeat=self.beat,
            retry=Backoff(initial=0.05, max_delay=0.25, connect_timeout=1.0),
            healthy_after=5.0,
            on_disconnect=self._on_disconnect,
            name=f"report:{address[1]}",
        )
        self.supervisor.start()
        try:
            self.conn = self.supervisor.wait_connected(10)
        except BaseException:
            self.supervisor.close()
            raise
        self.sock = self.conn
        self.connected_at = self.last_rx = time.monotonic()
        self._start_reader()

    def _on_disconnect(self, reason: DisconnectReason, error: BaseException | None) -> None:
        if self.closing:
            return
        self.disconnects.append((time.monotonic(), str(reason)))
        self._died()

    def anchor(self) -> float:
        heartbeat = self.conn.heartbeat
        if heartbeat is None:  # every supervised cell runs one; None would be a bug here
            raise RuntimeError("the supervised connection runs without a heartbeat")
        return heartbeat.last_received

    def stats(self) -> dict[str, Any]:
        stats = self.conn.stats
        counters = self.supervisor.stats
        return {
            "pings": stats.pings_sent,
            "pongs": stats.pongs_received,
            "unread_life": stats.unread_life,
            "disconnects": [reason for _, reason in self.disconnects],
            "connects": counters.connects,
        }

    def stop_heartbeat(self) -> None:
        self.conn.stop()

    def reconnect(self, lifted_at: float, timeout: float) -> float | None:
        """Seconds from ``lifted_at`` until a newer connection echoes a line, or None."""
        deadline = lifted_at + timeout
        check = b"RECONNECTED\n"
        while time.monotonic() < deadline:
            conn = self.supervisor.connection
            if conn is None or conn is self.conn:
                time.sleep(0.01)
                continue
            try:
                conn.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
                conn.sendall(check)
                got = b""
                while len(got) < len(check):
                    data = conn.recv(len(check) - len(got))
                    if not data:
                        break
                    got += data
            except OSError:
                continue
            if got == check:
                return time.monotonic() - lifted_at
        return None

    def close(self) -> None:
        self.closing = True
        self.reading.set()
        self.supervisor.close()  # ends and closes the live connection, joins its thread
        self.conn.close()
        self._reader.join(5)


# ---------------------------------------------------------------------------------------------
# One cell: a layer against a fault


class Cell:
    """Runs one layer against one fault and fills in a :class:`CellResult`."""

    def __init__(self, scenario: Scenario, layer: str, profile: Profile, repetition: int) -> None:
        self.scenario = scenario
        self.layer = layer
        self.profile = profile
        self.beat = profile.lossy_heartbeat if scenario.lossy else profile.heartbeat
        expectation = scenario.expect.get(layer, ALIVE)
        self.result = CellResult(
            scenario=scenario.key,
            layer=layer,
            repetition=repetition,
            expectation=expectation,
            bound=profile.bound(layer, lossy=scenario.lossy),
            reason=scenario.reasons.get(layer, ""),
        )
        self.netns: PrivateNetns | None = None
        self.seq = 0

    @property
    def expectation(self) -> str:
        return self.result.expectation

    @property
    def bound(self) -> float:
        assert self.result.bound is not None
        return self.result.bound

    def client(self) -> AppClient:
        if self.layer == KERNEL:
            return KernelClient(self.beat, self.profile, self.profile.kernel)
        if self.layer == KERNEL_UT:
            return KernelClient(self.beat, self.profile, self.profile.kernel_user_timeout)
        if self.layer == HB_SYNC:
            return HeartbeatSyncClient(self.beat, self.profile)
        if self.layer == HB_AIO:
            return HeartbeatAioClient(self.beat, self.profile)
        return SupervisedClient(self.beat, self.profile)

    @contextlib.contextmanager
    def connected(self, address: tuple[str, int]) -> Iterator[AppClient]:
        client = self.client()
        client.connect(address)
        try:
            yield client
        finally:
            self.result.stats.update(client.stats())
            client.close()

    # -- phases ------------------------------------------------------------------------------

    def send(self, client: AppClient, count: int) -> bool:
        """Send ``count`` more records; False if the connection refused them (a verdict, an
        error: the caller's checks report it)."""
        try:
            self.seq = client.send_records(self.seq, count)
        except OSError as exc:
            self.result.notes.append(f"a send failed: {_describe(exc)}")
            return False
        return True

    def stream(self, client: AppClient, *, bursts: int = 3, size: int = 10) -> bool:
        """Send records in bursts with pauses longer than the heartbeat interval (so pings and
        pongs interleave with the stream), then wait until every echo is in. False (and a
        recorded problem) on a verdict or a missing echo."""
        pause = self.beat.interval + self.beat.timeout / 3
        for _ in range(bursts):
            if not self.send(client, size):
                break
            time.sleep(pause)
        drained = client.wait_received(len(client.sent), 5.0)
        if client.verdict_at is not None:
            self.result.false_positives += 1
            self.result.problem(
                f"verdict on the healthy connection before the fault: {self._seen(client)}"
            )
            return False
        if not drained:
            self.result.problem("the stream's echo did not come back before the fault")
            return False
        return True

    def _seen(self, client: AppClient) -> str:
        if client.outcome is not None:
            return client.outcome.detail
        return "PeerUnresponsive" if client.dead_at is not None else "nothing"

    def await_verdict(
        self, client: AppClient, fault_at: float, *, from_fault: bool = False
    ) -> None:
        """After a fault: wait for the verdict (or, for a documented blind spot, make sure none
        comes within 3x the bound) and measure it."""
        result = self.result
        if self.expectation == UNSEEN:
            window = UNSEEN_FACTOR * self.bound
            result.watched = window
            if client.wait_verdict(window - (time.monotonic() - fault_at)):
                result.detection = self._detection(client, fault_at, from_fault)
                result.verdict = self._seen(client)
                result.problem(
                    f"documented not to see this fault, yet a verdict came after "
                    f"{result.detection:.2f} s ({result.verdict})"
                )
            else:
                result.verdict = "none"
            return
        window = 3 * self.bound + 2.0
        if not client.wait_verdict(window):
            result.watched = window
            result.verdict = "none"
            result.problem(f"no verdict within {window:g} s of the fault (bound {self.bound:g} s)")
            return
        client.wait_outcome(2.0)  # the application reads what was delivered, then the error
        result.verdict = self._seen(client)
        detection = self._detection(client, fault_at, from_fault)
        result.detection = detection
        if detection > self.bound + SLACK:
            result.problem(
                f"detected after {detection:.2f} s: over the bound {self.bound:g} s + {SLACK:g}"
            )
        early = EARLY["kernel" if self.layer in (KERNEL, KERNEL_UT) else "heartbeat"]
        if not from_fault and detection < self.bound - early:
            result.problem(
                f"verdict after {detection:.2f} s, sooner than the bound {self.bound:g} s"
            )

    def _detection(self, client: AppClient, fault_at: float, from_fault: bool) -> float:
        verdict = client.verdict_at
        assert verdict is not None
        return verdict - (fault_at if from_fault else client.anchor())

    def watch_alive(self, client: AppClient, until: float) -> None:
        """A healthy connection: any verdict until ``until`` is a false positive."""
        client.wait_verdict(until - time.monotonic())
        self.no_verdict(client)

    def no_verdict(self, client: AppClient) -> None:
        """A healthy connection must have had no verdict (counted once per cell).

        On a lossy path a heartbeat's verdict is as documented when the path really stayed
        silent for the whole bound (TCP retransmitting): it is counted and explained, not
        failed. A verdict after a shorter silence would break the bound's promise."""
        if client.verdict_at is None or self.result.verdict:
            return
        seen = self._seen(client)
        self.result.verdict = seen
        self.result.false_positives += 1
        if self.expectation == DOCUMENT:
            return
        if self.scenario.lossy and self.layer in (HB_SYNC, HB_AIO, SUPERVISED):
            silent = client.verdict_at - client.anchor()
            self.result.notes.append(
                f"a verdict after {silent:.1f} s without a byte: the path stalled longer than "
                f"the bound ({self.bound:g} s)"
            )
            if silent >= self.bound - EARLY["heartbeat"]:
                return
        self.result.problem(f"false positive: {seen} on a healthy connection")

    def check_bytes(self, expected: bytes, got: bytes, *, ended: bool = False) -> None:
        """Compare the application stream with what was sent. ``ended``: a verdict ended a
        healthy connection (reported as such): bytes still in flight then are not counted as
        lost, but what arrived must still be exactly the start of the stream."""
        lost, altered = compare(expected, got)
        self.result.bytes_expected = len(expected)
        if ended and not altered:
            if lost:
                self.result.notes.append(f"{lost} B in flight when the connection was ended")
            return
        self.result.bytes_lost = lost
        self.result.bytes_altered = altered
        if lost or altered:
            self.result.problem(
                f"application stream: {lost} of {len(expected)} bytes missing, {altered} "
                "unexpected bytes"
            )

    def lifted(self, client: AppClient, lift: Callable[[], None]) -> None:
        """Supervised cells: lift the fault and measure the reconnect."""
        if not isinstance(client, SupervisedClient):
            return
        lift()
        lifted_at = time.monotonic()
        took = client.reconnect(lifted_at, 15.0)
        self.result.reconnect = took
        if took is None:
            self.result.problem("no working connection within 15 s of lifting the fault")


# ---------------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    how: str  # how the fault is produced
    promise: str  # what the documentation says happens
    run: Callable[[Cell], None]
    expect: dict[str, str]
    reasons: dict[str, str] = field(default_factory=dict)  # n/a and blind-spot explanations
    netns: bool = False
    needs: str = ""  # an external tool
    lossy: bool = False


def _detect_flow(
    cell: Cell,
    address: tuple[str, int],
    fault: Callable[[], None],
    lift: Callable[[], None],
    *,
    from_fault: bool = False,
    tail: bytes = b"",
) -> None:
    with cell.connected(address) as client:
        if not cell.stream(client):
            return
        fault_at = time.monotonic()
        fault()
        cell.await_verdict(client, fault_at, from_fault=from_fault)
        cell.check_bytes(bytes(client.sent) + tail, client.received())
        cell.lifted(client, lift)


def run_black_hole(cell: Cell) -> None:
    assert cell.netns is not None
    namespace = cell.netns
    with EchoServer() as server:
        _detect_flow(
            cell,
            server.address,
            lambda: namespace.drop(server.address[1]),
            namespace.heal,
        )


def run_nat_freeze(cell: Cell) -> None:
    with EchoServer() as server, FaultProxy(server.address) as proxy:
        _detect_flow(cell, proxy.address, proxy.freeze, proxy.forward)


def run_nat_socat(cell: Cell) -> None:
    with EchoServer() as server:
        relay = SocatRelay(server.address)
        try:
            _detect_flow(cell, relay.address, relay.stop, relay.cont)
        finally:
            relay.close()


def run_kill(cell: Cell) -> None:
    servers = [ChildServer()]

    def restart() -> None:
        servers.append(ChildServer(servers[0].address[1]))

    try:
        _detect_flow(cell, servers[0].address, servers[0].kill, restart, from_fault=True)
        cell.result.notes.append(f"seen as {cell.result.verdict}")
    finally:
        for server in servers:
            server.kill()


def run_idle_drop(cell: Cell) -> None:
    profile = cell.profile
    with EchoServer() as server, FaultProxy(server.address) as proxy:
        proxy.drop_after_idle(profile.idle_drop)
        with cell.connected(proxy.address) as client:
            if not cell.stream(client):
                return
            idle_until = time.monotonic() + 2.5 * profile.idle_drop
            if cell.expectation == UNSEEN:
                # The application goes quiet longer than the middlebox's idle timeout; kernel
                # probes never reach the proxy's user space, so the flow is forgotten.
                time.sleep(max(0.0, idle_until - time.monotonic()))
                expected = bytes(client.sent)
                cell.send(client, 1)
                sent_at = time.monotonic()
                cell.await_verdict(client, sent_at, from_fault=True)
                discarded = proxy.bytes_discarded
                cell.result.notes.append(
                    f"flow forgotten: {discarded} bytes discarded by the middlebox, unnoticed"
                    if discarded
                    else "flow kept"
                )
                cell.check_bytes(expected, client.received())
                return
            # Heartbeat layers: pings cross the middlebox more often than its idle timeout.
            cell.watch_alive(client, idle_until)
            cell.send(client, 1)
            client.wait_received(len(client.sent), 3.0)
            cell.no_verdict(client)
            cell.check_bytes(
                bytes(client.sent), client.received(), ended=client.verdict_at is not None
            )
            cell.result.watched = 2.5 * profile.idle_drop
            if proxy.bytes_discarded:
                cell.result.problem(f"the middlebox forgot the flow ({proxy.bytes_discarded} B)")


def run_loss(cell: Cell) -> None:
    """Chat (a record every 50 ms for 0.5 s), then stay quiet 1.2 s: heartbeat pings go out
    in the quiet spells, kernel probes do not (the idle time stays below 1 s)."""
    _lossy_chat(cell, cell.profile.loss_observe, quiet=1.2)


def run_loss_tight(cell: Cell) -> None:
    """The same loss with the short settings of every other row, and quiet spells of 4 s:
    long enough for kernel keepalive's probes (idle 1 s) to run out (3 s)."""
    _lossy_chat(cell, 9.0, quiet=4.0)


def _lossy_chat(cell: Cell, seconds: float, *, quiet: float) -> None:
    assert cell.netns is not None
    namespace = cell.netns
    with EchoServer() as server, cell.connected(server.address) as client:
        for sock in _raw_sockets(client):
            with sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        namespace.drop(server.address[1], 25)
        started = time.monotonic()
        until = started + seconds
        while time.monotonic() < until and client.verdict_at is None:
            for _ in range(10):
                if not cell.send(client, 1):
                    break
                time.sleep(0.05)
            client.wait_verdict(min(quiet, until - time.monotonic()))
        client.wait_received(len(client.sent), 15.0)
        cell.result.watched = (client.verdict_at or time.monotonic()) - started
        cell.no_verdict(client)
        cell.check_bytes(bytes(client.sent), client.received(), ended=client.verdict_at is not None)


def _raw_sockets(client: AppClient) -> list[socket.socket]:
    if isinstance(client, HeartbeatAioClient):
        sock = client.writer.get_extra_info("socket")
        return [] if sock is None else [socket.socket(fileno=os.dup(sock.fileno()))]
    return [socket.socket(fileno=os.dup(client.fileno()))]


def _peer_flow(
    cell: Cell,
    peer: Peer,
    drive: Callable[[AppClient, float], None],
    check: Callable[[AppClient], None],
) -> None:
    with cell.connected(peer.address) as client:
        started = time.monotonic()
        until = started + cell.profile.observe
        drive(client, until)
        cell.watch_alive(client, until)
        cell.result.watched = time.monotonic() - started
        peer.quiet()
        check(client)


def run_busy(cell: Cell) -> None:
    beat = cell.beat
    peer = Peer("busy", period=beat.interval + beat.timeout / 2, burst=16 * 1024)
    try:
        _peer_flow(cell, peer, lambda _c, _u: None, lambda client: _check_own(cell, peer, client))
    finally:
        peer.close()


def run_trickle(cell: Cell) -> None:
    peer = Peer("trickle", period=cell.beat.interval / 2)
    try:
        _peer_flow(cell, peer, lambda _c, _u: None, lambda client: _check_own(cell, peer, client))
    finally:
        peer.close()


def _check_own(cell: Cell, peer: Peer, client: AppClient) -> None:
    time.sleep(0.05)  # the producer's last write
    expected = peer.sent(0)
    client.wait_received(len(expected), 5.0)
    cell.no_verdict(client)
    cell.check_bytes(expected, client.received(), ended=client.verdict_at is not None)


def run_slow_reader(cell: Cell) -> None:
    peer = Peer("bulk", burst=64 * 1024)
    try:
        with cell.connected(peer.address) as client:
            started = time.monotonic()
            time.sleep(0.5)
            _pause(client, True)
            time.sleep(cell.profile.slow_pause)
            unread, rcvbuf = client.unread()
            _pause(client, False)
            cell.result.stats.update({"unread": unread, "rcvbuf": rcvbuf})
            cell.watch_alive(client, time.monotonic() + 1.0)
            cell.result.watched = time.monotonic() - started
            peer.quiet()
            _check_own(cell, peer, client)
    finally:
        peer.close()


def _pause(client: AppClient, paused: bool) -> None:
    if isinstance(client, HeartbeatAioClient):
        client.pause(paused)
    elif paused:
        client.reading.clear()
    else:
        client.reading.set()


def run_pong_flood(cell: Cell) -> None:
    peer = Peer("flood", period=cell.beat.interval + cell.beat.timeout / 2)

    def drive(client: AppClient, until: float) -> None:
        while time.monotonic() < until - 0.5 and client.verdict_at is None:
            if not cell.send(client, 5):
                break
            time.sleep(0.25)

    def check(client: AppClient) -> None:
        client.stop_heartbeat()
        time.sleep(0.5)  # the last pongs come in (and are still taken)
        client.wait_received(len(client.sent), 3.0)
        cell.no_verdict(client)
        lines = client.received().split(b"\n")
        tail = lines.pop()
        pongs = sum(1 for line in lines if line == b"PONG")
        records = b"".join(line + b"\n" for line in lines if line != b"PONG") + tail
        cell.check_bytes(bytes(client.sent), records, ended=client.verdict_at is not None)
        taken = int(client.stats().get("pongs", 0))
        cell.result.stats.update({"unsolicited": peer.unsolicited, "answered": peer.answered})
        if pongs + taken != peer.unsolicited + peer.answered:
            cell.result.problem(
                f"PONG lines: {pongs} delivered + {taken} taken as replies != "
                f"{peer.unsolicited} unsolicited + {peer.answered} replies sent"
            )
        cell.result.notes.append(f"{pongs} of {peer.unsolicited} unsolicited PONG lines delivered")

    try:
        _peer_flow(cell, peer, drive, check)
    finally:
        peer.close()


def run_partial_pong(cell: Cell) -> None:
    peer = Peer("partial")
    try:
        _detect_flow(cell, peer.address, peer.arm, lambda: None, tail=b"PO")
    finally:
        peer.close()


_RELAY_ANSWERS = "the relay's kernel answers"
_USER_TIMEOUT_LOSS = (
    "TCP_USER_TIMEOUT drops data unacknowledged for 2 s; under 25 % loss a segment lost 5 "
    "times running (p = 0.25^5 ≈ 0.1 %) still is"
)
_TIGHT_TIMEOUT = (
    "a 0.3 s timeout (misses 1) is shorter than TCP's retransmission timeout (0.2 s, "
    "doubling): one lost ping or pong is a verdict"
)
SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "black_hole",
        "peer host black-holed",
        "private netns; nftables drops every segment of the server's port, both ways",
        "every layer detects within its bound",
        run_black_hole,
        dict.fromkeys(LAYERS, DETECT),
        netns=True,
    ),
    Scenario(
        "nat_freeze",
        "proxying NAT loses the server (FaultProxy)",
        "`FaultProxy.freeze()`: the relay stops copying; both kernels keep ACKing",
        "kernel layers never see it; the heartbeat detects within interval + timeout",
        run_nat_freeze,
        {KERNEL: UNSEEN, KERNEL_UT: UNSEEN, HB_SYNC: DETECT, HB_AIO: DETECT, SUPERVISED: DETECT},
        dict.fromkeys((KERNEL, KERNEL_UT), _RELAY_ANSWERS),
    ),
    Scenario(
        "nat_socat",
        "proxying NAT loses the server (socat)",
        "a real third-party relay, `socat`, stopped with SIGSTOP",
        "as with FaultProxy",
        run_nat_socat,
        {KERNEL: UNSEEN, KERNEL_UT: UNSEEN, HB_SYNC: DETECT, HB_AIO: DETECT, SUPERVISED: DETECT},
        dict.fromkeys((KERNEL, KERNEL_UT), _RELAY_ANSWERS),
        needs="socat",
    ),
    Scenario(
        "kill",
        "peer process killed",
        "SIGKILL to a child-process echo server; its kernel closes the connection",
        "FIN or RST: every layer at once (times from the kill)",
        run_kill,
        dict.fromkeys(LAYERS, DETECT),
    ),
    Scenario(
        "idle_drop",
        "middlebox drops idle flows",
        "`FaultProxy.drop_after_idle(1 s)`; the application is quiet 2.5 s, then sends",
        "pings (interval < the idle timeout) keep the flow; kernel probes never reach a "
        "userspace middlebox, so the flow is lost and nothing notices",
        run_idle_drop,
        {KERNEL: UNSEEN, KERNEL_UT: UNSEEN, HB_SYNC: ALIVE, HB_AIO: ALIVE, SUPERVISED: ALIVE},
        dict.fromkeys((KERNEL, KERNEL_UT), "the middlebox's kernel answers"),
    ),
    Scenario(
        "loss",
        "25 % loss",
        "private netns; nftables `numgen random` drops 25 % of the segments each way; the "
        "application chats 0.5 s then is quiet 1.2 s, for 10 s",
        "no false positive with settings sane for the path (the heartbeat's lossy-path "
        "settings); only a stall longer than the bound may end a connection (†)",
        run_loss,
        {**dict.fromkeys(LAYERS, ALIVE), KERNEL_UT: DOCUMENT},
        {KERNEL_UT: _USER_TIMEOUT_LOSS},
        netns=True,
        lossy=True,
    ),
    Scenario(
        "loss_tight",
        "25 % loss, short settings",
        "the same loss with the short settings of the other rows, quiet spells of 4 s",
        "recorded as it is: these settings are too short for such a path",
        run_loss_tight,
        dict.fromkeys(LAYERS, DOCUMENT),
        {
            KERNEL: "count 2: a probe round trip fails with p = 1 - 0.75² ≈ 44 %, two in a "
            "row ≈ 19 % per quiet spell over 3 s",
            KERNEL_UT: _USER_TIMEOUT_LOSS,
            HB_SYNC: _TIGHT_TIMEOUT,
            HB_AIO: _TIGHT_TIMEOUT,
            SUPERVISED: _TIGHT_TIMEOUT,
        },
        netns=True,
    ),
    Scenario(
        "busy",
        "busy peer, never answers pings",
        "the peer sends 16 KiB every interval + timeout/2 and ignores pings",
        "any inbound byte is life: no verdict, though pings go unanswered",
        run_busy,
        dict.fromkeys(LAYERS, ALIVE),
    ),
    Scenario(
        "slow_reader",
        "slow reader (we stop reading)",
        "the peer streams as fast as it can, never answers pings; the application stops "
        "reading for 2 s",
        "unread bytes the peer may be blocked behind (our receive window closed) count as "
        "life: no verdict",
        run_slow_reader,
        dict.fromkeys(LAYERS, ALIVE),
    ),
    Scenario(
        "trickle",
        "peer trickles bytes",
        "one byte every interval/2, pings never answered",
        "a trickling peer is alive",
        run_trickle,
        dict.fromkeys(LAYERS, ALIVE),
    ),
    Scenario(
        "pong_flood",
        "unsolicited pong flood",
        "the peer sends 100 `PONG` lines every interval + timeout/2, no ping owed, and answers "
        "pings",
        "pongs with no ping owed reach the application; no verdict",
        run_pong_flood,
        dict.fromkeys(LAYERS, ALIVE),
    ),
    Scenario(
        "partial_pong",
        "partial pong, then silence",
        'the peer answers a ping with "PO", then nothing; the connection stays open',
        'a verdict within the bound; "PO" reaches the application before the error',
        run_partial_pong,
        {
            KERNEL: NOT_APPLICABLE,
            KERNEL_UT: NOT_APPLICABLE,
            HB_SYNC: DETECT,
            HB_AIO: DETECT,
            SUPERVISED: DETECT,
        },
        dict.fromkeys((KERNEL, KERNEL_UT), "no ping, so no pong"),
    ),
)


# ---------------------------------------------------------------------------------------------
# Running


def run_cell(scenario: Scenario, layer: str, profile: Profile, repetition: int) -> CellResult:
    """One cell in a thread of its own (entering a private namespace first if needed)."""
    cell = Cell(scenario, layer, profile, repetition)
    failure: list[BaseException] = []

    def body() -> None:
        try:
            if scenario.netns:
                cell.netns = PrivateNetns()
            scenario.run(cell)
        except BaseException as exc:  # reported in the cell, never lost
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"cell-{scenario.key}-{layer}", daemon=True)
    thread.start()
    thread.join(CELL_TIMEOUT)
    if thread.is_alive():
        cell.result.problem(f"the cell did not finish within {CELL_TIMEOUT:g} s")
    elif failure:
        exc = failure[0]
        cell.result.problem(f"the cell failed: {type(exc).__name__}: {exc}")
    return cell.result


def run_concurrently(
    scenario: Scenario, layers: Sequence[str], profile: Profile, repetition: int
) -> list[CellResult]:
    """One repetition of a row: its layers at the same time, one connection each."""
    results: dict[str, CellResult] = {}

    def go(layer: str) -> None:
        results[layer] = run_cell(scenario, layer, profile, repetition)

    threads = [
        threading.Thread(target=go, args=(layer,), name=f"row-{layer}", daemon=True)
        for layer in layers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CELL_TIMEOUT + 10)
    return [results[layer] for layer in layers if layer in results]


def run_row(
    scenario: Scenario, profile: Profile, skip: str, log: Callable[[str], None]
) -> RowResult:
    started = time.monotonic()
    before = settled_resources(resources(), 0)
    cells: list[CellResult] = []
    layers = [layer for layer in LAYERS if scenario.expect[layer] != NOT_APPLICABLE]
    for repetition in range(0 if skip else profile.repetitions):
        cells.extend(run_concurrently(scenario, layers, profile, repetition))
    for layer in LAYERS:
        if scenario.expect[layer] == NOT_APPLICABLE or skip:
            cells.append(
                CellResult(
                    scenario=scenario.key,
                    layer=layer,
                    repetition=0,
                    expectation=NOT_APPLICABLE,
                    reason=skip or scenario.reasons.get(layer, ""),
                )
            )
    after = settled_resources(before)
    row = RowResult(
        scenario.key,
        scenario.title,
        scenario.how,
        scenario.promise,
        cells,
        before,
        after,
        time.monotonic() - started,
        skipped=skip,
    )
    bad = sum(len(cell.problems) for cell in cells) + row.leaked
    log(f"{scenario.key:<13} {row.seconds:5.1f} s  {'ok' if not bad else f'{bad} problem(s)'}")
    return row


@dataclass
class FillTrial:
    """One look at the premise of the heartbeat's slow-reader rule (unread bytes count as life
    while the peer may be blocked behind them: our receive window is closed; where the kernel
    does not report the window, when they fill at least half of SO_RCVBUF)."""

    target: int  # bytes the reader was to take before it stopped reading
    read_first: int  # bytes it took (whole reads)
    unread: int  # FIONREAD once the sender could send no more
    rcvbuf: int  # SO_RCVBUF then
    window: int | None = None  # the receive window we advertised then (Linux 6.2+), bytes

    @property
    def ratio(self) -> float:
        return self.unread / self.rcvbuf if self.rcvbuf else 0.0


def fill_trial(read_first: int) -> FillTrial:
    """A plain loopback connection: the sender writes 64 KiB chunks as fast as it can; the
    reader reads ``read_first`` bytes, then stops. Once nothing moved for 0.3 s (the sender's
    writes fail with EAGAIN), how much waits unread, against SO_RCVBUF?"""
    with socket.create_server((LOCALHOST, 0)) as listener:
        reader = socket.create_connection(listener.getsockname())
        sender, _ = listener.accept()
    stop = threading.Event()
    last_sent = [time.monotonic()]

    def pump() -> None:
        data = b"x" * 65536
        sender.setblocking(False)
        while not stop.is_set():
            try:
                sender.send(data)
                last_sent[0] = time.monotonic()
            except BlockingIOError:
                stop.wait(0.002)
            except OSError:
                return

    thread = threading.Thread(target=pump, name="fill-pump", daemon=True)
    thread.start()
    try:
        got = 0
        while got < read_first:
            got += len(reader.recv(65536))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and time.monotonic() - last_sent[0] < 0.3:
            time.sleep(0.05)
        return FillTrial(
            read_first,
            got,
            _unread(reader.fileno()),
            reader.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            receive_window(reader),
        )
    finally:
        stop.set()
        thread.join(5)
        reader.close()
        sender.close()


def fill_probe(repetitions: int) -> list[FillTrial]:
    """:func:`fill_trial` after reading 0 to 1 MB first, ``repetitions`` times each, one after
    another (autotuning depends on timing: concurrent trials would disturb each other)."""
    sizes = (0, 100_000, 200_000, 300_000, 400_000, 500_000, 700_000, 1_000_000)
    return [fill_trial(size) for _ in range(repetitions) for size in sizes]


def warm_up() -> None:
    """Create and drop one connection of each kind, so that lazily created process-wide
    state (the heartbeat scheduler's first use, imports) is not counted as a leak."""
    profile = QUICK
    with EchoServer() as server:
        for layer in LAYERS:
            cell = Cell(SCENARIOS[0], layer, profile, 0)
            with cell.connected(server.address) as client:
                client.send_records(0, 1)
                client.wait_received(len(client.sent), 5.0)


def machine_facts() -> dict[str, str]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        commit = done.stdout.strip()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": f"{platform.system()} {platform.release()}",
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "commit": commit,
    }


def _describe_configs(profile: Profile) -> dict[str, str]:
    def kernel(cfg: KeepaliveConfig) -> str:
        text = f"idle {cfg.idle:g} s, interval {cfg.interval:g} s, count {cfg.count}"
        if cfg.user_timeout is not None:
            text += f", TCP_USER_TIMEOUT {cfg.user_timeout:g} s"
        return text

    def beat(cfg: HeartbeatConfig) -> str:
        return f"interval {cfg.interval:g} s, timeout {cfg.timeout:g} s, misses {cfg.misses}"

    return {
        KERNEL: kernel(profile.kernel),
        KERNEL_UT: kernel(profile.kernel_user_timeout),
        HB_SYNC: beat(profile.heartbeat),
        HB_AIO: beat(profile.heartbeat),
        SUPERVISED: (
            "the heartbeat and kernel keepalive above (no user timeout), "
            "Backoff(initial 0.05 s, max 0.25 s), connect timeout 1 s, healthy after 5 s"
        ),
        "lossy": beat(profile.lossy_heartbeat),
    }


def run_report(
    profile: Profile,
    command: str,
    only: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> Report:
    started = time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    warnings: list[str] = []
    netns_reason = netns_unavailable()
    if netns_reason:
        warnings.append(f"namespace rows not run: {netns_reason}")
    load_before = os.getloadavg()[0]
    warm_up()
    start = settled_resources(resources(), 0)
    rows = []
    for scenario in SCENARIOS:
        if only and scenario.key not in only:
            continue
        skip = ""
        if scenario.netns and netns_reason:
            skip = f"not run: {netns_reason}"
        elif scenario.needs and shutil.which(scenario.needs) is None:
            skip = f"not run: {scenario.needs} is not installed"
            warnings.append(f"{scenario.key}: {skip}")
        rows.append(run_row(scenario, profile, skip, log))
    fill = fill_probe(profile.fill_repetitions) if not only else []
    machine = machine_facts()
    machine["load"] = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    bounds = {layer: profile.bound(layer) for layer in LAYERS}
    bounds["lossy"] = profile.lossy_heartbeat.detection_bound
    return Report(
        command=command,
        profile=profile.name,
        repetitions=profile.repetitions,
        date=date,
        machine=machine,
        configs=_describe_configs(profile),
        bounds=bounds,
        rows=rows,
        seconds=time.monotonic() - started,
        warnings=warnings,
        start=start,
        end=settled_resources(start),
        fill=fill,
    )


# ---------------------------------------------------------------------------------------------
# Markdown

#: What was found behind a failing cell, shown in the report only while that cell fails.
CAUSES: dict[tuple[str, str], str] = {
    ("partial_pong", SUPERVISED): (
        "partial pong / supervised: the bytes the pong matcher holds at the verdict (the "
        '"PO" that might have become a pong) are lost. `MonitoredSocket` hands them to the '
        "application before `PeerUnresponsive` (`_read_locked` flushes the matcher once a "
        "verdict is in), but a supervised connection is read only by the supervisor's "
        "`_read_ahead`, whose loop stops as soon as `_heartbeat_died` has recorded the end; "
        "`SupervisedSocket.recv` then raises from its own buffer, which never got them."
    ),
}


def _seconds(values: Sequence[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} (max {max(values):.2f})"


def summarize(cells: Sequence[CellResult]) -> str:
    """The text of one table cell: every repetition of one layer against one fault."""
    first = cells[0]
    if first.expectation == NOT_APPLICABLE:
        return f"n/a: {first.reason}" if first.reason else "n/a"
    detections = [c.detection for c in cells if c.detection is not None]
    problems = sum(len(c.problems) for c in cells)
    fp = sum(c.false_positives for c in cells)
    lost = sum(c.bytes_lost + c.bytes_altered for c in cells)
    mark = " ✗" if problems else " †" if fp else " ✓"
    if first.expectation == DETECT:
        text = f"{_seconds(detections)} s" if detections else "no verdict"
    elif first.expectation == UNSEEN:
        watched = max(c.watched or 0.0 for c in cells)
        seen = f"{_seconds(detections)} s" if detections else f"no verdict in {watched:g} s"
        text = f"n/a ({first.reason}): {seen}"
    elif first.expectation == DOCUMENT:
        text = f"{fp} FP in {len(cells)} run{'s' if len(cells) > 1 else ''}"
    else:
        watched = min(c.watched or 0.0 for c in cells)
        text = f"alive {watched:.1f} s, {fp} FP"
    reconnects = [c.reconnect for c in cells if c.reconnect is not None]
    if reconnects:
        text += f"; back in {_seconds(reconnects)} s"
    if lost:
        text += f"; {lost} B lost"
    return text + mark


def _by_layer(row: RowResult) -> dict[str, list[CellResult]]:
    grouped: dict[str, list[CellResult]] = {}
    for cell in row.cells:
        grouped.setdefault(cell.layer, []).append(cell)
    return grouped


def _grouped_problems(report: Report) -> list[str]:
    """The report's problems, one line per cell and text with the runs it occurred in."""
    runs: dict[tuple[str, str, str], list[int]] = {}
    for row in report.rows:
        for cell in row.cells:
            for text in cell.problems:
                runs.setdefault((row.key, cell.layer, text), []).append(cell.repetition + 1)
    lines = [
        f"{key} / {LAYER_TITLES[layer]} (run{'s' if len(numbers) > 1 else ''} "
        f"{', '.join(map(str, numbers))}): {text}"
        for (key, layer, text), numbers in runs.items()
    ]
    cell_problems = {f"{k} / {LAYER_TITLES[layer]}" for k, layer, _ in runs}
    lines += [
        problem
        for problem in report.problems
        if not any(problem.startswith(prefix + " (run") for prefix in cell_problems)
    ]
    return lines


def _render_fill(trials: Sequence[FillTrial]) -> list[str]:
    ratios = [trial.ratio for trial in trials]
    low = [trial for trial in trials if trial.ratio < 0.5]
    lines = [
        "## The slow-reader rule's premise",
        "",
        "The heartbeat counts unread bytes as life while the peer may be unable to send because",
        "of them: where the kernel reports the receive window we advertise (Linux 6.2+,",
        "`tcpi_rcv_wnd`), when it is closed; elsewhere, when they fill at least half of",
        "SO_RCVBUF. On a plain loopback connection whose sender writes as fast as it can, the",
        "reader read some bytes and stopped; once the sender's writes had failed with EAGAIN for",
        "0.3 s (it could send nothing more), the unread bytes and the window were:",
        "",
        "| read first (kB) | unread / SO_RCVBUF (unread KiB), receive window (bytes) |",
        "|---|---|",
    ]
    by_size: dict[int, list[FillTrial]] = {}
    for trial in trials:
        by_size.setdefault(trial.target, []).append(trial)
    lines += [
        f"| {size // 1000} | "
        + ", ".join(
            f"{t.ratio:.0%} ({t.unread // 1024}), {'?' if t.window is None else t.window}"
            for t in group
        )
        + " |"
        for size, group in sorted(by_size.items())
    ]
    windows = [trial.window for trial in trials if trial.window is not None]
    closed = sum(1 for window in windows if window == 0)
    lines += [
        "",
        f"{len(trials)} trials: median {statistics.median(ratios):.0%}, lowest {min(ratios):.0%}; "
        f"{len(low)} below half. The kernel's receive window, not SO_RCVBUF, decides when the "
        "sender must stop, and after receive-buffer autotuning it can close far below half of "
        "SO_RCVBUF, so the half-buffer guess misses those. "
        + (
            f"The window was reported in {len(windows)} trials and closed in {closed} of them: "
            + (
                "the rule this kernel uses sees every blocked sender."
                if closed == len(windows) == len(trials)
                else "a blocked sender with an open window would be missed."
            )
            if windows
            else "This kernel does not report the window: the half-buffer guess is in use here."
        ),
    ]
    return lines


def _load_soak_module() -> Any:
    """benchmarks/soak.py as a module (its summary rows render the soak section)."""
    import importlib.util  # noqa: PLC0415 - only for the soak section

    spec = importlib.util.spec_from_file_location("keepalive_soak_report", SOAK_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def render_soak(soak: dict[str, Any], source: str) -> list[str]:
    """The soak section: a long run of benchmarks/soak.py, summarised from its JSON."""
    module = _load_soak_module()
    command, machine = soak["command"], soak.get("machine", {})
    when = (
        f"It ran on {machine['started_utc']} UTC, CPython {machine['python']}, Linux "
        f"{machine['kernel']}, {machine['cpus']} CPUs (load average after: "
        f"{machine['load_after']}). "
        if machine
        else "When and where it ran: see docs/soak.md. "
    )
    lines = [
        "## Soak: supervised connections under churn",
        "",
        f"`python3 benchmarks/soak.py --connections {command['connections']} --minutes "
        f"{command['minutes']:g} --seed {command['seed']}"
        + (" --retry-invalid-socket" if command.get("retry_invalid_socket") else "")
        + f"`: {module.report_settings(soak)}. Half the connections use "
        "`keepalive.sync.Supervisor`, half `keepalive.aio.Supervisor`, behind FaultProxys "
        "that freeze, reset and refuse at random; each echoes a checksummed line stream. "
        + when
        + f"Rendered from `{source}`; what each check means: docs/soak.md.",
        "",
        "| measure | result |",
        "|---|---|",
    ]
    lines += [  # (indented rows break a row above down: "· " keeps that visible)
        f"| {'· ' if name.startswith(' ') else ''}{name.strip()} | {value.replace('|', '/')} |"
        for name, value in module.report_rows(soak)
    ]
    verdict = "PASS" if not soak["violations"]["total"] else "FAIL"
    lines += ["", f"Verdict: **{verdict}**."]
    lines += [f"- {example}" for example in soak["violations"]["examples"]]
    return lines


def chart_data(report: Report) -> dict[str, Any]:
    """The numbers of the detection-time chart (docs/data/fault-report.json): for every
    scenario and layer that ran, its expectation, bound, median and maximum detection time
    (None without a verdict), how long a connection was watched, and its false positives."""
    scenarios: list[dict[str, Any]] = []
    for row in report.rows:
        if row.skipped:
            continue
        cells: list[dict[str, Any]] = []
        for layer, runs in _by_layer(row).items():
            first = runs[0]
            if first.expectation == NOT_APPLICABLE:
                continue
            detections = [c.detection for c in runs if c.detection is not None]
            watched = [c.watched for c in runs if c.watched is not None]
            cells.append(
                {
                    "layer": layer,
                    "expectation": first.expectation,
                    "bound": first.bound,
                    "runs": len(runs),
                    "median": round(statistics.median(detections), 2) if detections else None,
                    "max": round(max(detections), 2) if detections else None,
                    "watched": round(max(watched), 2) if watched else None,
                    "false_positives": sum(c.false_positives for c in runs),
                    "reason": first.reason,
                }
            )
        scenarios.append({"key": row.key, "title": row.title, "cells": cells})
    return {
        "format": CHART_FORMAT,
        "command": report.command,
        "date": report.date,
        "repetitions": report.repetitions,
        "slack": SLACK,
        "layers": [
            {"key": layer, "title": LAYER_TITLES[layer], "bound": report.bounds.get(layer)}
            for layer in LAYERS
        ],
        "scenarios": scenarios,
    }


def render_markdown(report: Report, soak: tuple[dict[str, Any], str] | None = None) -> str:
    machine = report.machine
    lines = [
        "<!-- Generated by scripts/fault_report.py: do not edit by hand. -->",
        "",
        "# Reliability: every layer against real faults",
        "",
        "**This file is generated.** It was written by",
        f"`{report.command}` on {report.date}, on {machine.get('kernel', '?')}, "
        f"{machine.get('cpus', '?')} CPUs ({machine.get('cpu') or 'unknown CPU'}), "
        f"{machine.get('implementation', 'Python')} {machine.get('python', '?')}"
        + (f", commit {machine['commit']}" if machine.get("commit") else "")
        + f"; the run took {report.seconds:.0f} s with {report.repetitions} "
        f"repetition{'s' if report.repetitions != 1 else ''} per cell"
        + (f" (1-minute load average {machine['load']})" if machine.get("load") else "")
        + ". Rerun it to refresh the numbers (as root for the namespace rows).",
        "",
        "Every fault is produced for real on this machine, on loopback or in private network",
        "namespaces (`unshare`, `nft`). Times are seconds from the last inbound byte to the",
        "verdict (the documented bound's starting point), except for the killed peer: from the",
        "kill. With several repetitions a cell shows the median and the maximum. ✓: as",
        f"documented (a detection within its bound + {SLACK:g} s and never sooner, no false",
        "positive, no lost byte); ✗: not, see the findings below; †: false positives that the",
        "documentation itself predicts for these settings on this path (see each cell's notes).",
        "",
        "## Layers and bounds",
        "",
        "| layer | configuration | documented bound |",
        "|---|---|---|",
    ]
    for layer in LAYERS:
        lines.append(
            f"| {LAYER_TITLES[layer]} | {report.configs.get(layer, '')} | "
            f"{report.bounds.get(layer, 0):g} s |"
        )
    if "lossy" in report.configs:
        lines.append(
            f"| heartbeat on the lossy path | {report.configs['lossy']} | "
            f"{report.bounds.get('lossy', 0):g} s |"
        )
    lines += [
        "",
        "## Results",
        "",
        "| scenario | " + " | ".join(LAYER_TITLES[layer] for layer in LAYERS) + " | fds, threads |",
        "|---" * (len(LAYERS) + 2) + "|",
    ]
    for row in report.rows:
        grouped = _by_layer(row)
        texts = [summarize(grouped[layer]) if layer in grouped else "—" for layer in LAYERS]
        if row.skipped:
            used = "—"
        else:
            used = f"{row.before.fds}→{row.after.fds}, {row.before.threads}→{row.after.threads}" + (
                " ✗" if row.leaked else ""
            )
        lines.append(f"| {row.title} | " + " | ".join(texts) + f" | {used} |")
    lines += [
        "",
        'FP: false positives (a verdict on a healthy connection). "back in": the Supervisor\'s',
        "first working connection (an echoed line) after the fault was lifted. fds, threads:",
        "open descriptors and threads of the process before and after the row (its cells run",
        "concurrently, one connection each)"
        + (
            f"; the whole run: {report.start.fds}→{report.end.fds} descriptors, "
            f"{report.start.threads}→{report.end.threads} threads."
            if report.start and report.end
            else "."
        ),
        "",
        f"![Detection time of each layer against each fault, with its documented bound]"
        f"({CHART_PICTURE})",
        "",
        f"The chart is drawn from `{CHART_DATA.relative_to(ROOT)}` by "
        "`python3 scripts/draw_pictures.py`.",
        "",
        "## How each fault is made",
        "",
        "| scenario | how | documented behaviour |",
        "|---|---|---|",
    ]
    lines += [f"| {row.title} | {row.how} | {row.promise} |" for row in report.rows]
    if report.fill:
        lines += ["", *_render_fill(report.fill)]
    lines += [
        "",
        "## Every cell",
        "",
        "| scenario | layer | runs | verdict | time (s) | bound (s) | FP | stream bytes (lost) "
        "| reconnect (s) | heartbeat | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        for layer, cells in _by_layer(row).items():
            first = cells[0]
            if first.expectation == NOT_APPLICABLE:
                continue
            verdicts = sorted({c.verdict or "none" for c in cells})
            beat = ""
            if "pings" in first.stats:
                beat = "pings {}, pongs {}".format(
                    sum(int(c.stats.get("pings", 0)) for c in cells),
                    sum(int(c.stats.get("pongs", 0)) for c in cells),
                )
                unread_life = sum(int(c.stats.get("unread_life", 0)) for c in cells)
                if unread_life:
                    beat += f", unread bytes taken as life {unread_life} times"
            notes = sorted({note for c in cells for note in c.notes})
            fills = [
                (int(c.stats["unread"]), int(c.stats["rcvbuf"]))
                for c in cells
                if c.stats.get("rcvbuf")
            ]
            if fills:
                ratios = [unread / rcvbuf for unread, rcvbuf in fills]
                notes.append(
                    f"unread when reading resumed: {min(ratios):.0%} to {max(ratios):.0%} of "
                    f"SO_RCVBUF ({min(u for u, _ in fills) // 1024} to "
                    f"{max(u for u, _ in fills) // 1024} KiB)"
                )
            if first.reason and first.expectation in (DOCUMENT, UNSEEN):
                notes.insert(0, first.reason)
            lines.append(
                f"| {row.key} | {LAYER_TITLES[layer]} | {len(cells)} | {', '.join(verdicts)} | "
                f"{_seconds([c.detection for c in cells if c.detection is not None])} | "
                f"{first.bound:g} | {sum(c.false_positives for c in cells)} | "
                f"{sum(c.bytes_expected for c in cells)} "
                f"({sum(c.bytes_lost + c.bytes_altered for c in cells)}) | "
                f"{_seconds([c.reconnect for c in cells if c.reconnect is not None])} | "
                f"{beat} | {'; '.join(notes)} |"
            )
    lines += ["", "## Findings", ""]
    problems = report.problems
    if problems:
        lines.append("Cells that did not behave as documented:")
        lines.append("")
        lines += [f"- {problem}" for problem in _grouped_problems(report)]
        failing = {(c.scenario, c.layer) for row in report.rows for c in row.cells if c.problems}
        causes = [text for key, text in CAUSES.items() if key in failing]
        if causes:
            lines += ["", "Causes found in the code (at the time this analysis was written):", ""]
            lines += [f"- {text}" for text in causes]
    else:
        lines.append("Every layer behaved as documented in every cell.")
    # A risk only where the half-buffer guess is the rule (the kernel reports no window).
    low = [trial for trial in report.fill if trial.ratio < 0.5 and trial.window is None]
    missed = [trial for trial in report.fill if trial.window not in (None, 0)]
    if missed:
        lines += [
            "",
            f"- risk: in {len(missed)} of {len(report.fill)} receive-buffer trials the sender was "
            "blocked while our receive window was open: a slow reader can then get a false "
            "verdict.",
        ]
    if low:
        lines += [
            "",
            f"- risk: in {len(low)} of {len(report.fill)} receive-buffer trials the sender was "
            f"blocked with only {min(t.ratio for t in low):.0%} to "
            f"{max(t.ratio for t in low):.0%} of SO_RCVBUF unread (see the slow-reader rule's "
            "premise above): a slow reader can then get a false verdict.",
        ]
    if report.warnings:
        lines += ["", *[f"- warning: {warning}" for warning in report.warnings]]
    if soak is not None:
        lines += ["", *render_soak(*soak)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition per cell")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the Markdown report")
    parser.add_argument("--json", type=Path, help="also write every measurement as JSON")
    parser.add_argument(
        "--chart-json",
        type=Path,
        help="write the detection-time chart's numbers here; default "
        f"{CHART_DATA.relative_to(ROOT)} when --output is the default, else not written",
    )
    parser.add_argument("--repetitions", type=int, help="override the profile's repetitions")
    parser.add_argument("--only", action="append", default=[], help="run this scenario only")
    parser.add_argument(
        "--soak",
        type=Path,
        default=SOAK_RESULTS,
        help="a soak run's JSON (benchmarks/soak.py --json) for the soak section; "
        f"default {SOAK_RESULTS.relative_to(ROOT)}, skipped when missing",
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else DEFAULT
    if args.repetitions:
        profile = dataclasses.replace(profile, repetitions=args.repetitions)
    words = ["python3", "scripts/fault_report.py", *(["--quick"] if args.quick else [])]
    if args.repetitions:
        words.append(f"--repetitions {args.repetitions}")
    words += [f"--only {key}" for key in args.only]
    if sys.platform != "linux":
        print("fault_report.py measures Linux kernels only", file=sys.stderr)
        return 2
    unknown = set(args.only) - {scenario.key for scenario in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    report = run_report(profile, " ".join(words), args.only, log)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    soak = None
    if args.soak.is_file():
        source = args.soak.resolve()
        shown = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
        soak = (json.loads(args.soak.read_text(encoding="utf-8")), str(shown))
    args.output.write_text(render_markdown(report, soak), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(dataclasses.asdict(report), indent=1), encoding="utf-8")
    chart_json = args.chart_json or (CHART_DATA if args.output == OUTPUT else None)
    if chart_json is not None:
        chart_json.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(chart_data(report), indent=1, ensure_ascii=False)
        chart_json.write_text(text + "\n", encoding="utf-8")
        log(f"wrote {chart_json}: redraw the chart with python3 scripts/draw_pictures.py")
    problems = report.problems
    if os.environ.get(REQUIRE_NETNS_ENV) == "1" and any("namespace" in w for w in report.warnings):
        problems.append(f"{REQUIRE_NETNS_ENV}=1 but the namespace rows could not run")
    if os.environ.get(REQUIRE_INTEGRATIONS_ENV) == "1" and any(
        "not installed" in w for w in report.warnings
    ):
        problems.append(f"{REQUIRE_INTEGRATIONS_ENV}=1 but a relay tool is missing")
    log(f"wrote {args.output} in {report.seconds:.0f} s")
    for problem in problems:
        log(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
