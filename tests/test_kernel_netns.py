"""Kernel keepalive against real network faults, each test in a private network namespace.

Both ends of every connection live on the namespace's loopback; once the connection is
established, nftables rules there (tests/netns.py) black-hole, reset or randomly drop the
segments of the server's port. Detection times are the kernel's own, measured from the last
segment the detecting socket received (or, for unacknowledged data, from the send) and compared
with ``KeepaliveConfig.detection_bound``: never more than ``EARLY`` sooner (so every probe tick
was really waited for) and at most ``LATE`` later (timer-wheel slack on a loaded 2-core box).

Measured times are printed; ``pytest -rP`` shows them.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from netns import Namespace, netns_fixture, private_netns  # noqa: F401 - fixture `netns`

import keepalive
from keepalive import KeepaliveConfig

#: How much sooner than predicted a death may be measured: our clock reading follows the
#: kernel's receipt of the last segment by a little, and the kernel counts in jiffies.
EARLY = 0.25
#: How much later: timers fire late by up to a timer-wheel slot, the test thread wakes late.
LATE = 1.0

LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
TCP_ESTABLISHED = 1  # include/net/tcp_states.h

# struct tcp_info (include/uapi/linux/tcp.h): 8 one-byte fields, then 32-bit fields from
# tcpi_rto up to tcpi_total_retrans (the 24th).
_TCP_INFO = struct.Struct("8B24I")


# -- helpers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """Both ends of one established loopback connection, and the listener."""

    listener: socket.socket
    client: socket.socket
    server: socket.socket

    @property
    def port(self) -> int:
        port: int = self.listener.getsockname()[1]
        return port


@contextmanager
def connection(
    family: socket.AddressFamily = socket.AF_INET,
    *,
    client_cfg: KeepaliveConfig | None = None,
    listener_cfg: KeepaliveConfig | None = None,
) -> Iterator[Connection]:
    """Connect a client to a listener on loopback. ``listener_cfg`` is applied to the
    listening socket (the accepted one inherits it), ``client_cfg`` to the connected client."""
    opened: list[socket.socket] = []
    try:
        listener = socket.socket(family, socket.SOCK_STREAM)
        opened.append(listener)
        listener.bind((LOOPBACK[family], 0))
        if listener_cfg is not None:
            keepalive.configure(listener, listener_cfg)
        listener.listen()
        client = socket.socket(family, socket.SOCK_STREAM)
        opened.append(client)
        client.settimeout(10)
        client.connect(listener.getsockname())
        if client_cfg is not None:
            keepalive.configure(client, client_cfg)
        server, _ = listener.accept()
        opened.append(server)
        server.settimeout(10)
        yield Connection(listener, client, server)
    finally:
        for sock in reversed(opened):
            sock.close()


def last_inbound(sender: socket.socket, receiver: socket.socket) -> float:
    """Send one byte and receive it; the monotonic time just after ``receiver`` got it, which
    is where the kernel starts counting ``receiver``'s idle time.

    The receiver's ACK goes out at once (TCP_QUICKACK flushes a delayed one), so nothing is in
    flight when the test then installs a fault: a late ACK would otherwise meet the fault.
    """
    sender.sendall(b"!")
    assert receiver.recv(1) == b"!"
    arrived = time.monotonic()
    receiver.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    return arrived


def wait_for_error(sock: socket.socket, since: float, limit: float) -> tuple[OSError | None, float]:
    """Block in ``recv`` until the kernel reports an error on ``sock`` or ``since + limit``.

    Returns the error (None when the socket is still alive at the limit) and the seconds
    from ``since``. Receiving data or EOF instead fails the test.
    """
    sock.settimeout(max(0.01, since + limit - time.monotonic()))
    try:
        data = sock.recv(1)
    except OSError as exc:
        elapsed = time.monotonic() - since
        if isinstance(exc, TimeoutError) and exc.errno is None:
            return None, elapsed  # our own recv timeout, not the kernel's ETIMEDOUT
        return exc, elapsed
    pytest.fail(f"expected the connection to fail, but recv returned {data!r}")


def assert_died(
    error: OSError | None, elapsed: float, *, code: int, expected: float, netns: Namespace
) -> None:
    """``error`` is ``code`` and came ``expected`` seconds after the start, within tolerances."""
    name = errno.errorcode[code]
    assert error is not None, (
        f"still alive {elapsed:.2f} s later; expected {name} at {expected:g} s\n{netns.ruleset()}"
    )
    assert error.errno == code, f"expected {name}, got {error!r} after {elapsed:.2f} s"
    assert expected - EARLY <= elapsed <= expected + LATE, (
        f"{name} after {elapsed:.3f} s; expected {expected:g} s "
        f"(-{EARLY:g}/+{LATE:g} s)\n{netns.ruleset()}"
    )


def report(what: str, elapsed: float, expected: float) -> None:
    print(f"[netns] {what}: {elapsed:.3f} s (predicted {expected:g} s)")


@dataclass(frozen=True)
class TcpInfo:
    state: int
    probes: int  # keepalive (or zero-window) probes sent without an answer
    unacked: int  # segments in flight
    total_retrans: int


def tcp_info(sock: socket.socket) -> TcpInfo:
    fields = _TCP_INFO.unpack(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size))
    return TcpInfo(
        state=fields[0], probes=fields[3], unacked=fields[8 + 4], total_retrans=fields[-1]
    )


def raw_keepalive_options(sock: socket.socket) -> dict[str, int]:
    """The kernel's keepalive values for ``sock``, by plain getsockopt (not via the library)."""
    tcp = socket.IPPROTO_TCP
    return {
        "SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "TCP_KEEPIDLE": sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
        "TCP_KEEPINTVL": sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
        "TCP_KEEPCNT": sock.getsockopt(tcp, socket.TCP_KEEPCNT),
        "TCP_USER_TIMEOUT": sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
    }


class Echo(threading.Thread):
    """Echo everything ``sock`` receives until stopped, EOF or an error (kept in ``error``)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(name="netns-echo", daemon=True)
        self.sock = sock
        self.error: OSError | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(0.1)  # wake up now and then to notice `stopping`
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError as exc:
                if exc.errno is None:  # our own recv timeout, not the kernel's ETIMEDOUT
                    continue
                self.error = exc
                return
            except OSError as exc:
                self.error = exc
                return
            if not data:
                return
            try:
                self.sock.sendall(data)
            except OSError as exc:
                self.error = exc
                return

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)


def chat(
    sock: socket.socket,
    *,
    seconds: float,
    period: float,
    drain: float,
    before_drain: Callable[[], object] | None = None,
) -> tuple[bytes, bytes]:
    """Send a numbered line every ``period`` for ``seconds`` while reading the echoes, then
    call ``before_drain`` (once) and wait up to ``drain`` seconds for the rest; return
    (sent, received)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    sent, received = bytearray(), bytearray()
    start = time.monotonic()
    next_send = start
    while time.monotonic() < start + seconds or (
        len(received) < len(sent) and time.monotonic() < start + seconds + drain
    ):
        now = time.monotonic()
        if before_drain is not None and now >= start + seconds:
            before_drain()
            before_drain = None
        if now >= next_send and now < start + seconds:
            line = f"{len(sent) // 9:08d}\n".encode()
            sock.sendall(line)
            sent += line
            next_send += period
        sending = time.monotonic() < start + seconds
        wait = min(next_send - time.monotonic(), 0.1) if sending else 0.1
        for _ in poller.poll(max(0.0, wait) * 1000):
            data = sock.recv(65536)
            if not data:
                pytest.fail(f"EOF after {time.monotonic() - start:.2f} s of chatting")
            received += data
    if before_drain is not None:  # every echo was in when the sending stopped
        before_drain()
    return bytes(sent), bytes(received)


# -- a silent peer (black hole) --------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.parametrize(
    ("cfg", "family"),
    [
        pytest.param(KeepaliveConfig(idle=1, interval=1, count=2), socket.AF_INET, id="1-1-2-ipv4"),
        pytest.param(
            KeepaliveConfig(idle=2, interval=1, count=3), socket.AF_INET6, id="2-1-3-ipv6"
        ),
    ],
)
def test_black_holed_idle_peer_is_detected_within_the_bound(
    netns: Namespace, cfg: KeepaliveConfig, family: socket.AddressFamily
) -> None:
    with connection(family, client_cfg=cfg) as conn:
        since = last_inbound(conn.server, conn.client)
        hole = netns.black_hole(conn.port)
        error, elapsed = wait_for_error(conn.client, since, cfg.detection_bound + LATE)
        probes_lost = hole.packets  # before closing: close() sends more
    report(f"black hole, idle peer, {cfg}", elapsed, cfg.detection_bound)
    assert_died(error, elapsed, code=errno.ETIMEDOUT, expected=cfg.detection_bound, netns=netns)
    # The kernel gave up because its probes went unanswered, not for some other reason.
    assert probes_lost >= cfg.count


@pytest.mark.netns
def test_an_outage_shorter_than_the_probe_count_is_survived(netns: Namespace) -> None:
    cfg = KeepaliveConfig(idle=1, interval=1, count=3)  # dead after 4 s of silence
    with connection(client_cfg=cfg) as conn:
        since = last_inbound(conn.server, conn.client)
        hole = netns.black_hole(conn.port)
        time.sleep(since + 2.5 - time.monotonic())  # the probes at 1 s and 2 s are lost
        lost, unanswered = hole.packets, tcp_info(conn.client).probes
        hole.remove()  # the probe at 3 s is answered
        error, elapsed = wait_for_error(conn.client, since, cfg.detection_bound + LATE)
        after = tcp_info(conn.client)
        conn.server.sendall(b"?")
        assert conn.client.recv(1) == b"?"
    assert (lost, unanswered) == (2, 2)
    assert error is None, f"died after {elapsed:.2f} s ({error!r}) though the path healed"
    assert after.state == TCP_ESTABLISHED
    assert after.probes == 0  # an answered probe resets the count


# -- unacknowledged data: TCP_USER_TIMEOUT ------------------------------------------------------


@pytest.mark.netns
def test_user_timeout_detects_a_black_hole_with_data_in_flight(netns: Namespace) -> None:
    cfg = KeepaliveConfig(idle=1, interval=1, count=2, user_timeout=2)
    with connection(client_cfg=cfg) as conn:
        last_inbound(conn.server, conn.client)
        netns.black_hole(conn.port)
        conn.client.sendall(b"never acknowledged")
        sent = time.monotonic()
        error, elapsed = wait_for_error(conn.client, sent, 2 + LATE)
    # Linux starts the user-timeout clock at the first RTO retransmission (tcp_retransmit_skb
    # sets retrans_stamp), after a tail-loss probe and one RTO: about 0.4 s late on loopback.
    report("black hole, data in flight, user_timeout 2", elapsed, 2)
    assert_died(error, elapsed, code=errno.ETIMEDOUT, expected=2, netns=netns)


@pytest.mark.netns
def test_keepalive_alone_is_suspended_while_data_is_unacknowledged(netns: Namespace) -> None:
    cfg = KeepaliveConfig(idle=1, interval=1, count=2)
    watch = 6.0  # three times the user timeout of the test above
    assert cfg.detection_bound * 2 <= watch  # an idle connection would long be dead
    with connection(client_cfg=cfg) as conn:
        assert raw_keepalive_options(conn.client)["TCP_USER_TIMEOUT"] == 0
        last_inbound(conn.server, conn.client)
        netns.black_hole(conn.port)
        conn.client.sendall(b"never acknowledged")
        sent = time.monotonic()
        error, elapsed = wait_for_error(conn.client, sent, watch)
        info = tcp_info(conn.client)
        pending_error = conn.client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    assert error is None, f"died after {elapsed:.2f} s ({error!r}) though data was in flight"
    assert elapsed >= watch - 0.1
    assert pending_error == 0
    assert info.state == TCP_ESTABLISHED
    assert info.unacked >= 1, "the data should still be in flight"
    assert info.total_retrans >= 3, "retransmission (not keepalive) governs the connection"
    assert info.probes == 0, "no keepalive probe may be sent while data is unacknowledged"


# -- the Linux rule: TCP_USER_TIMEOUT replaces TCP_KEEPCNT ----------------------------------------


@pytest.mark.netns
@pytest.mark.parametrize(
    "cfg",
    [
        # Dies at the probe tick after 2.5 s (3 s), long before 10 probes (11 s).
        pytest.param(
            KeepaliveConfig(idle=1, interval=1, count=10, user_timeout=2.5), id="ut-below-probing"
        ),
        # The count is ignored: still probing at 2 s, dies at 3 s.
        pytest.param(
            KeepaliveConfig(idle=1, interval=1, count=1, user_timeout=3), id="ut-above-probing"
        ),
        # A user timeout shorter than idle still waits for one unanswered probe (3 s).
        pytest.param(
            KeepaliveConfig(idle=2, interval=1, count=5, user_timeout=1), id="ut-below-idle"
        ),
    ],
)
def test_user_timeout_replaces_the_probe_count_for_an_idle_peer(
    netns: Namespace, cfg: KeepaliveConfig
) -> None:
    expected = cfg.detection_bound
    assert expected != cfg.probing_time  # otherwise this case could not tell the rules apart
    with connection(client_cfg=cfg) as conn:
        since = last_inbound(conn.server, conn.client)
        netns.black_hole(conn.port)
        error, elapsed = wait_for_error(conn.client, since, expected + LATE)
    report(f"black hole, idle peer, {cfg}", elapsed, expected)
    assert_died(error, elapsed, code=errno.ETIMEDOUT, expected=expected, netns=netns)


# -- resets ----------------------------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_reset_of_sent_data_is_reported_promptly(
    netns: Namespace, family: socket.AddressFamily
) -> None:
    with connection(family, client_cfg=KeepaliveConfig(idle=1, interval=1, count=3)) as conn:
        last_inbound(conn.server, conn.client)
        reset = netns.reset(conn.port)
        conn.client.sendall(b"hello")
        sent = time.monotonic()
        error, elapsed = wait_for_error(conn.client, sent, LATE)
        rejected = reset.packets  # before closing: close() sends more
    report("reset of sent data", elapsed, 0)
    assert_died(error, elapsed, code=errno.ECONNRESET, expected=0, netns=netns)
    assert elapsed < 0.5
    assert rejected == 1  # the data segment


@pytest.mark.netns
def test_reset_answering_a_keepalive_probe_is_detected_at_the_first_probe(
    netns: Namespace,
) -> None:
    cfg = KeepaliveConfig(idle=1, interval=1, count=3)
    with connection(client_cfg=cfg) as conn:
        since = last_inbound(conn.server, conn.client)
        reset = netns.reset(conn.port)
        error, elapsed = wait_for_error(conn.client, since, cfg.detection_bound + LATE)
        rejected = reset.packets  # before closing: close() sends more
    report("reset answering the first keepalive probe", elapsed, cfg.idle)
    assert_died(error, elapsed, code=errno.ECONNRESET, expected=cfg.idle, netns=netns)
    assert rejected == 1  # the first probe


# -- loss is not death ---------------------------------------------------------------------------


@pytest.mark.netns
def test_random_loss_on_a_chatty_connection_is_no_false_positive(netns: Namespace) -> None:
    cfg = KeepaliveConfig(idle=1, interval=1, count=3)
    with connection(client_cfg=cfg, listener_cfg=cfg) as conn:
        for sock in (conn.client, conn.server):
            # An interactive protocol's setting: every line its own segment, so a loss is
            # noticed from the next segments' SACKs instead of waiting out a backed-off RTO.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loss = netns.random_loss(conn.port, 25)  # each direction, each segment
        dropped = 0

        def heal() -> None:
            # The loss lasts as long as the chat. Draining the tail under loss could outlast
            # any fixed wait: a tail segment lost a few times in a row waits out an RTO doubled
            # each time (0.2 + 0.4 + 0.8 + 1.6 + 3.2 s), and then the idle side's probes
            # (count=3) are exposed to the loss as well. Healed, the tail arrives at the
            # pending retransmission.
            nonlocal dropped
            dropped = loss.packets
            loss.remove()

        echo = Echo(conn.server)
        echo.start()
        try:
            sent, received = chat(
                conn.client, seconds=5.0, period=0.05, drain=15.0, before_drain=heal
            )
        except OSError as exc:
            pytest.fail(f"the connection died under 25 % loss: {exc!r}\n{netns.ruleset()}")
        finally:
            echo.stop()
        errors = [
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            for sock in (conn.client, conn.server)
        ]
        infos = [tcp_info(conn.client), tcp_info(conn.server)]
    print(
        f"[netns] 25 % loss: {len(sent)} bytes echoed, {dropped} segments dropped, "
        f"{sum(info.total_retrans for info in infos)} retransmissions"
    )
    assert echo.error is None, f"the server side died: {echo.error!r}"
    assert received == sent, "every byte echoed, in order, once"
    assert errors == [0, 0]
    assert [info.state for info in infos] == [TCP_ESTABLISHED, TCP_ESTABLISHED]
    # The loss was real and retransmission repaired it.
    assert dropped >= 10
    assert sum(info.total_retrans for info in infos) >= 1


# -- accepted sockets inherit the listener's settings ---------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="Linux inheritance rules")
def test_accepted_socket_inherits_the_listener_settings() -> None:
    # Plain host loopback: no namespace (or root) needed to read options back.
    cfg = KeepaliveConfig(idle=7, interval=3, count=4, user_timeout=11.5)
    with connection(listener_cfg=cfg) as conn:
        accepted = raw_keepalive_options(conn.server)
        client = raw_keepalive_options(conn.client)
        state = keepalive.inspect(conn.server)
    assert accepted == {
        "SO_KEEPALIVE": 1,
        "TCP_KEEPIDLE": 7,
        "TCP_KEEPINTVL": 3,
        "TCP_KEEPCNT": 4,
        "TCP_USER_TIMEOUT": 11500,
    }
    assert (state.enabled, state.idle, state.interval, state.count, state.user_timeout) == (
        True,
        7.0,
        3.0,
        4,
        11.5,
    )
    # The unconfigured client shows that the values came from the listener, not the system.
    assert client["SO_KEEPALIVE"] == 0
    assert client["TCP_USER_TIMEOUT"] == 0


@pytest.mark.netns
def test_accepted_socket_detects_a_black_hole_with_inherited_settings(netns: Namespace) -> None:
    # With the inherited user timeout the bound is 3 s; without it, the count would end at 2 s.
    cfg = KeepaliveConfig(idle=1, interval=1, count=1, user_timeout=3)
    assert cfg.detection_bound == 3 != cfg.probing_time
    with connection(listener_cfg=cfg) as conn:
        since = last_inbound(conn.client, conn.server)
        netns.black_hole(conn.port)
        error, elapsed = wait_for_error(conn.server, since, cfg.detection_bound + LATE)
    report(f"black hole, accepted socket, {cfg}", elapsed, cfg.detection_bound)
    assert_died(error, elapsed, code=errno.ETIMEDOUT, expected=cfg.detection_bound, netns=netns)


# -- the helper itself -----------------------------------------------------------------------------


@pytest.mark.netns
def test_private_netns_is_fresh_and_the_thread_returns() -> None:
    outside = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
    with private_netns() as namespace:
        inside = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
        interfaces = [name for _, name in socket.if_nameindex()]
        with socket.create_server(("127.0.0.1", 0)) as listener:
            socket.create_connection(listener.getsockname()).close()
        with pytest.raises(ValueError, match="percent"):
            namespace.random_loss(80, 0)
        with pytest.raises(ValueError, match="direction"):
            namespace.black_hole(80, "sideways")  # type: ignore[arg-type]
    after = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
    assert namespace.inode == inside != outside == namespace.outer_inode == after
    assert interfaces == ["lo"]  # a new, empty namespace: only its own loopback, up
