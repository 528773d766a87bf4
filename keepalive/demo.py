"""``python -m keepalive demo``: the NAT story, reproduced live on loopback.

A server, a relay standing in for VMware's vmnat (it terminates the client's TCP connection
and opens its own to the server), and a client with both kernel keepalive and a heartbeat.
The relay then loses the server: nothing crosses any more, yet the relay's kernel keeps
answering the client's keepalive probes. The timeline shows kernel keepalive satisfied long
past its own deadline while the heartbeat declares the peer dead within its bound.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from keepalive.config import KeepaliveConfig
from keepalive.errors import PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.sockets import configure
from keepalive.testing import EchoServer, FaultProxy

__all__ = ["DemoResult", "run_demo"]

KERNEL = KeepaliveConfig(idle=1, interval=1, count=2)
HEARTBEAT = HeartbeatConfig(interval=1, timeout=1)
FREEZE_AT = 1.5  # seconds after connecting
WATCH_FOR = 3 * 3.0  # keep watching the kernel for 3 x its detection bound after the freeze

# Linux struct tcp_info (include/uapi/linux/tcp.h): u8 tcpi_state first; tcpi_probes is the
# fourth byte; tcpi_last_ack_recv (ms) is the 13th u32 after the 8 leading bytes.
_TCP_ESTABLISHED = 1
_TCP_INFO_PROBES = 3
_TCP_INFO_LAST_ACK_RECV = 8 + 12 * 4


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
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return KernelView(None, None, None, error)
    raw = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 104)
    (last_ack_ms,) = struct.unpack_from("I", raw, _TCP_INFO_LAST_ACK_RECV)
    return KernelView(raw[0] == _TCP_ESTABLISHED, raw[_TCP_INFO_PROBES], last_ack_ms / 1000, error)


@dataclass(frozen=True, slots=True)
class DemoResult:
    """Times in seconds after the relay lost the server."""

    heartbeat_detected_after: float | None
    kernel_still_established_after: float | None
    kernel_detection_bound: float
    heartbeat_detection_bound: float


class _Timeline:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.start

    @staticmethod
    def clock() -> float:
        return time.monotonic()

    def say(self, who: str, text: str) -> None:
        with self.lock:
            self.out.write(f"  t={self.now():6.2f} s  {who:<10} {text}\n")
            self.out.flush()


def run_demo(out: TextIO) -> DemoResult:
    """Run the story and write its timeline to ``out``."""
    from keepalive.sync import monitor  # noqa: PLC0415 - keeps `keepalive.demo` import light

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
        timeline = _Timeline(out)
        # Two client connections through the NAT: one trusts kernel keepalive alone, the
        # other also runs the heartbeat (which closes its socket once it declares death).
        plain = socket.create_connection(proxy.address)
        configure(plain, KERNEL)
        watched = socket.create_connection(proxy.address)
        configure(watched, KERNEL)
        dead_at: list[float] = []

        def on_dead(_sock: object, error: BaseException) -> None:
            dead_at.append(timeline.now())
            silent = conn.heartbeat.last_received
            timeline.say(
                "heartbeat",
                f"#2 PEER DEAD: no reply for {timeline.clock() - silent:.1f} s",
            )

        conn = monitor(
            watched, heartbeat=HEARTBEAT, ping=b"PING\n", pong=b"PONG\n", on_dead=on_dead
        )
        timeline.say("client", "two connections through the NAT, a reader on each:")
        timeline.say("", "#1 kernel keepalive only, #2 keepalive + heartbeat")
        readers = [
            threading.Thread(target=_read, args=(plain, "#1", timeline), daemon=True),
            threading.Thread(target=_read, args=(conn, "#2", timeline), daemon=True),
        ]
        for thread in readers:
            thread.start()

        _sleep_until(timeline, FREEZE_AT - 0.4)
        if conn.rtt is not None:
            timeline.say("heartbeat", f"#2 PONG from the server in {conn.rtt * 1000:.1f} ms")
        _sleep_until(timeline, FREEZE_AT)
        proxy.freeze()
        frozen_at = timeline.now()
        timeline.say("NAT", "** loses the server; its kernel still ACKs probes **")

        last_established: float | None = None
        next_report = frozen_at + 1.0
        while next_report <= frozen_at + WATCH_FOR:
            _sleep_until(timeline, next_report)
            view = kernel_view(plain)
            silent = timeline.now() - frozen_at
            if view.established is not False and not view.error:
                last_established = silent
            timeline.say("kernel", f"#1 {view.describe()}")
            next_report += 1.0 if silent < 4 else 2.5
        plain.shutdown(socket.SHUT_RDWR)  # wakes its reader; the demo is over
        plain.close()
        conn.close()
        for thread in readers:
            thread.join(timeout=2)

    detected = None if not dead_at else dead_at[0] - frozen_at
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
            f"  kernel keepalive: #1 still ESTABLISHED {last_established:.1f} s after the server "
            f"was lost,\n    although it gives up after {kernel_bound:g} s of silence: the NAT "
            "answered every probe\n"
        )
    out.write(
        "  Only traffic the real peer must answer proves that it is alive: use a\n"
        "  heartbeat (keepalive.sync.monitor, keepalive.aio.open_connection) wherever\n"
        "  a NAT or proxy may stand between you and the server.\n"
    )
    return DemoResult(detected, last_established, kernel_bound, HEARTBEAT.detection_bound)


def _read(conn: object, label: str, timeline: _Timeline) -> None:
    recv = conn.recv  # type: ignore[attr-defined]
    try:
        while data := recv(4096):
            timeline.say("client", f"{label} received {data!r}")
    except PeerUnresponsive as exc:
        del exc  # its text is the heartbeat's verdict, already on the timeline
        timeline.say("client", f"{label} blocked recv() raised PeerUnresponsive")
    except OSError as exc:
        timeline.say("client", f"{label} recv() ended: {exc!r}")


def _sleep_until(timeline: _Timeline, moment: float) -> None:
    delay = moment - timeline.now()
    if delay > 0:
        time.sleep(delay)


def _addr(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"
