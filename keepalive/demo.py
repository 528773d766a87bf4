"""``python -m keepalive demo``: the NAT story, reproduced live on loopback.

A server, a relay standing in for VMware's vmnat (it terminates the client's TCP connection
and opens its own to the server), and a client with both kernel keepalive and a heartbeat.
The relay then loses the server: nothing crosses any more, yet the relay's kernel keeps
answering the client's keepalive probes. The timeline shows kernel keepalive satisfied long
past its own deadline while the heartbeat declares the peer dead within its bound.

Every line of the timeline is also kept as a :class:`DemoEvent` (``DemoResult.events``);
``keepalive demo --record PATH`` writes them as JSON (:func:`recording`), from which
``scripts/draw_pictures.py`` draws the documentation's timeline picture.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from keepalive._tcp_info import read_tcp_info
from keepalive.config import KeepaliveConfig
from keepalive.errors import PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.reconnect import Backoff
from keepalive.sockets import configure
from keepalive.supervision import DisconnectReason
from keepalive.testing import EchoServer, FaultProxy

if TYPE_CHECKING:
    from keepalive.sync.supervisor import SupervisedSocket

__all__ = ["DemoEvent", "DemoResult", "recording", "run_demo"]

KERNEL = KeepaliveConfig(idle=1, interval=1, count=2)
HEARTBEAT = HeartbeatConfig(interval=1, timeout=1)
RETRY = Backoff(initial=0.4, multiplier=1.5, max_delay=3.0, jitter="none")
HANDSHAKE_TIMEOUT = 0.5
FREEZE_AT = 1.5  # seconds after connecting
WATCH_FOR = 3 * 3.0  # keep watching the kernel for 3 x its detection bound after the freeze
HEAL_WAIT = 6.0
WIDTH = 80  # the longest wait for the reconnect once the server is back
RECORDING_FORMAT = 1  # bumped when the recording's keys change meaning


@dataclass(frozen=True, slots=True)
class DemoEvent:
    """One line of the timeline: ``at`` seconds after the clients connected, ``who`` said
    ``text``; ``kind`` names what happened (``server_lost``, ``kernel``, ``heartbeat_dead``,
    ``disconnected``, ``retry_failed``, ``retry_wait``, ``server_back``, ``healed``, ...) and
    ``details`` holds its numbers (for ``kernel``: ``established``, ``unanswered_probes``,
    ``last_ack_age``; for ``retry_wait``: ``delay``)."""

    at: float
    who: str
    kind: str
    text: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KernelView:
    """What the client's kernel says about the connection (None where this OS won't say)."""

    established: bool | None
    unanswered_probes: int | None
    last_ack_age: float | None
    error: int

    def describe(self) -> str:
        if self.error:
            return f"connection error: {socket.errno.errorcode.get(self.error, self.error)}"  # type: ignore[attr-defined]
        if self.established is None:
            return "no pending error (this OS does not expose the TCP state)"
        state = "ESTABLISHED" if self.established else "not established"
        return (
            f"{state}, {self.unanswered_probes} probes unanswered, "
            f"last ACK {self.last_ack_age:.1f} s ago"
        )


def kernel_view(sock: socket.socket) -> KernelView:
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    info = read_tcp_info(sock)  # None off Linux: other kernels' tcp_info differs
    if info is None:
        return KernelView(None, None, None, error)
    return KernelView(info.established, info.probes, info.last_ack_recv, error)


@dataclass(frozen=True, slots=True)
class DemoResult:
    """Times in seconds after the relay lost the server (``healed_after``: after it came
    back; None when the supervisor did not reconnect)."""

    heartbeat_detected_after: float | None
    kernel_still_established_after: float | None
    kernel_detection_bound: float
    heartbeat_detection_bound: float
    healed_after: float | None = None
    reconnect_attempts: int = 0
    events: tuple[DemoEvent, ...] = ()

    @property
    def played_out(self) -> bool:
        """The heartbeat saw the loss, kernel keepalive stayed fooled past its own bound, and
        the supervised connection healed."""
        fooled = (
            self.kernel_still_established_after is not None
            and self.kernel_still_established_after >= self.kernel_detection_bound
        )
        return (
            self.heartbeat_detected_after is not None and fooled and self.healed_after is not None
        )


class _Timeline:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.events: list[DemoEvent] = []

    def now(self) -> float:
        return time.monotonic() - self.start

    @staticmethod
    def clock() -> float:
        return time.monotonic()

    def say(self, who: str, text: str, kind: str = "note", **details: Any) -> None:
        with self.lock:
            at = self.now()
            self.events.append(DemoEvent(round(at, 3), who, kind, text, details))
            line = f"  t={at:6.2f} s  {who:<10} {text}"
            if len(line) > WIDTH:  # an OS error's text can be long: keep to 80 columns
                line = line[: WIDTH - 3] + "..."
            self.out.write(line + "\n")
            self.out.flush()


def run_demo(out: TextIO) -> DemoResult:
    """Run the story and write its timeline to ``out``."""
    kernel_bound = KERNEL.detection_bound
    out.write(
        "keepalive demo: a proxying NAT fools kernel keepalive; a heartbeat is not fooled\n\n"
    )
    with EchoServer() as server, FaultProxy(server.address) as proxy:
        out.write(f"  server     {_addr(server.address)}  echoes, answers PING with PONG\n")
        out.write(
            f"  NAT        {_addr(proxy.address)}  stands in for VMware's vmnat: it terminates"
            "\n             TCP and copies payload to its own connection\n"
        )
        out.write(
            f"  client     keepalive idle {KERNEL.idle:g} s, interval {KERNEL.interval:g} s,"
            f" count {KERNEL.count}: gives up after {kernel_bound:g} s\n"
            f"             heartbeat every {HEARTBEAT.interval:g} s, timeout "
            f"{HEARTBEAT.timeout:g} s: gives up after {HEARTBEAT.detection_bound:g} s\n\n"
        )
        return _Story(out, proxy).run()


class _Story:
    """Two client connections through the NAT: #1 trusts kernel keepalive alone; #2 is a
    supervised connection with a heartbeat, which reconnects once the peer is declared dead."""

    def __init__(self, out: TextIO, proxy: FaultProxy) -> None:
        self.out = out
        self.proxy = proxy
        self.timeline = _Timeline(out)
        self.frozen_at: float | None = None
        self.dead_at: float | None = None
        self.back_at: float | None = None
        self.healed_at: float | None = None
        self.failed_attempts = 0
        self.healed = threading.Event()

    # -- supervisor hooks (they run on the supervisor's thread) ---------------------------

    def handshake(self, conn: SupervisedSocket) -> None:
        """A re-handshake on every (re)connect: the server must echo HELLO in time."""
        conn.settimeout(HANDSHAKE_TIMEOUT)
        conn.sendall(b"HELLO\n")
        received = b""
        try:
            while not received.endswith(b"HELLO\n"):
                chunk = conn.recv(64)
                if not chunk:
                    raise ConnectionResetError("the NAT closed the connection")
                received += chunk
        except TimeoutError:
            raise TimeoutError(f"no answer to HELLO within {HANDSHAKE_TIMEOUT:g} s") from None
        finally:
            conn.settimeout(None)
        if self.dead_at is None:
            self.timeline.say("client", "#2 connected and greeted the server", "connected")
        else:
            self.healed_at = self.timeline.now()
            self.timeline.say("client", "#2 HEALED: reconnected and greeted the server", "healed")
            self.healed.set()

    def disconnected(self, reason: DisconnectReason, error: BaseException | None) -> None:
        del error
        if self.healed.is_set():
            self.timeline.say("supervisor", f"#2 {reason}: the demo is over", "over")
            return
        if self.dead_at is None:
            self.dead_at = self.timeline.now()
            if reason is DisconnectReason.HEARTBEAT_TIMEOUT:
                self.timeline.say(
                    "heartbeat", "#2 PEER DEAD: no reply to its ping in time", "heartbeat_dead"
                )
        self.timeline.say(
            "supervisor", f"#2 ended ({reason}): reconnecting", "disconnected", reason=str(reason)
        )

    def backoff(self, delay: float, error: BaseException | None) -> None:
        if self.dead_at is not None and self.timeline.now() - self.dead_at > 0.05:
            self.failed_attempts += 1
            self.timeline.say(
                "supervisor",
                f"attempt {self.failed_attempts} failed: {error}",
                "retry_failed",
                attempt=self.failed_attempts,
            )
        self.timeline.say(
            "supervisor", f"next attempt in {delay:.2f} s", "retry_wait", delay=round(delay, 3)
        )

    # -- the story ------------------------------------------------------------------------

    def run(self) -> DemoResult:
        from keepalive.sync import Supervisor  # noqa: PLC0415 - keeps the import light

        timeline, proxy = self.timeline, self.proxy
        plain = socket.create_connection(proxy.address)
        configure(plain, KERNEL)
        supervisor = Supervisor(
            proxy.address,
            keepalive=KERNEL,
            heartbeat=HEARTBEAT,
            retry=RETRY,
            connect_timeout=1.0,
            on_connect=self.handshake,
            on_disconnect=self.disconnected,
            on_backoff=self.backoff,
            name="demo",
        )
        with supervisor:
            conn = supervisor.wait_connected(timeout=5)
            timeline.say("client", "#1 kernel keepalive only; #2 also heartbeat, supervised")
            readers = [
                threading.Thread(target=_read, args=(plain, "#1", timeline), daemon=True),
                threading.Thread(target=_read, args=(conn, "#2", timeline), daemon=True),
            ]
            for thread in readers:
                thread.start()
            _sleep_until(timeline, FREEZE_AT - 0.4)
            if conn.rtt is not None:
                timeline.say(
                    "heartbeat",
                    f"#2 PONG from the server in {conn.rtt * 1000:.1f} ms",
                    "pong",
                    rtt=round(conn.rtt, 6),
                )
            _sleep_until(timeline, FREEZE_AT)
            proxy.freeze()
            frozen_at = timeline.now()
            timeline.say(
                "NAT", "** loses the server; its kernel still ACKs probes **", "server_lost"
            )
            last_established = self.watch_kernel(plain, frozen_at)
            _sleep_until(timeline, frozen_at + WATCH_FOR + 0.5)
            # Told before forward(): an attempt already waiting for HELLO may heal at once,
            # and the story (and its "reconnected N s after") must not run backwards.
            back_at = timeline.now()
            timeline.say("NAT", "** the server is back: bytes cross again **", "server_back")
            proxy.forward()
            self.healed.wait(timeout=HEAL_WAIT)
            plain.shutdown(socket.SHUT_RDWR)  # wakes its reader; the demo is over
            plain.close()
        for thread in readers:
            thread.join(timeout=2)
        return self.verdict(frozen_at, back_at, last_established)

    def watch_kernel(self, plain: socket.socket, frozen_at: float) -> float | None:
        """Report what #1's kernel says until 3 x its detection bound has passed."""
        last_established: float | None = None
        next_report = frozen_at + 1.0
        while next_report <= frozen_at + WATCH_FOR:
            _sleep_until(self.timeline, next_report)
            view = kernel_view(plain)
            silent = self.timeline.now() - frozen_at
            if view.established is not False and not view.error:
                last_established = silent
            self.timeline.say(
                "kernel",
                f"#1 {view.describe()}",
                "kernel",
                established=view.established,
                unanswered_probes=view.unanswered_probes,
                last_ack_age=None if view.last_ack_age is None else round(view.last_ack_age, 3),
                error=view.error,
            )
            next_report += 1.0 if silent < 4 else 2.5
        return last_established

    def verdict(
        self, frozen_at: float, back_at: float, last_established: float | None
    ) -> DemoResult:
        out = self.out
        detected = None if self.dead_at is None else self.dead_at - frozen_at
        healed = None if self.healed_at is None else self.healed_at - back_at
        out.write("\nverdict\n")
        if detected is not None:
            out.write(
                f"  heartbeat: declared the server dead {detected:.1f} s after it was lost\n"
                f"    (its bound: {HEARTBEAT.detection_bound:g} s after the last reply)\n"
            )
        else:
            out.write("  heartbeat: did NOT detect the lost server (unexpected)\n")
        if last_established is not None:
            out.write(
                f"  kernel keepalive: #1 still ESTABLISHED {last_established:.1f} s after the "
                f"server was lost,\n    although it gives up after {KERNEL.detection_bound:g} s "
                "of silence: the NAT answered every probe\n"
            )
        if healed is not None:
            out.write(
                f"  supervisor: #2 reconnected {healed:.1f} s after the server came back, "
                f"after\n    {self.failed_attempts} failed attempts with growing delays\n"
            )
        else:
            out.write("  supervisor: #2 did NOT reconnect in time (unexpected)\n")
        out.write(
            "  Only traffic the real peer must answer proves that it is alive: use a\n"
            "  heartbeat (keepalive.sync.monitor, keepalive.aio.open_connection) wherever\n"
            "  a NAT or proxy may stand between you and the server.\n"
        )
        return DemoResult(
            detected,
            last_established,
            KERNEL.detection_bound,
            HEARTBEAT.detection_bound,
            healed,
            self.failed_attempts,
            tuple(self.timeline.events),
        )


def recording(result: DemoResult) -> dict[str, Any]:
    """The demo's run as JSON-ready data (what ``keepalive demo --record PATH`` writes): the
    settings, the verdict, and every event of the timeline in order."""
    return {
        "format": RECORDING_FORMAT,
        "kernel": {
            "idle": KERNEL.idle,
            "interval": KERNEL.interval,
            "count": KERNEL.count,
            "detection_bound": result.kernel_detection_bound,
        },
        "heartbeat": {
            "interval": HEARTBEAT.interval,
            "timeout": HEARTBEAT.timeout,
            "detection_bound": result.heartbeat_detection_bound,
        },
        "result": {
            "played_out": result.played_out,
            "heartbeat_detected_after": _rounded(result.heartbeat_detected_after),
            "kernel_still_established_after": _rounded(result.kernel_still_established_after),
            "healed_after": _rounded(result.healed_after),
            "reconnect_attempts": result.reconnect_attempts,
        },
        "events": [
            {
                "at": event.at,
                "who": event.who,
                "kind": event.kind,
                "text": event.text,
                "details": event.details,
            }
            for event in result.events
        ],
    }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _read(conn: object, label: str, timeline: _Timeline) -> None:
    recv = conn.recv  # type: ignore[attr-defined]
    try:
        while data := recv(4096):
            timeline.say("client", f"{label} received {data!r}")
    except PeerUnresponsive as exc:
        del exc  # its text is the heartbeat's verdict, already on the timeline
        timeline.say("client", f"{label} blocked recv() raised PeerUnresponsive", "unresponsive")
    except OSError as exc:
        timeline.say("client", f"{label} recv() ended: {exc!r}", "recv_ended")


def _sleep_until(timeline: _Timeline, moment: float) -> None:
    delay = moment - timeline.now()
    if delay > 0:
        time.sleep(delay)


def _addr(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"
