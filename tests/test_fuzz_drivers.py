"""Fuzzing the public entry points of the heartbeat drivers and supervisors with arbitrary
arguments: ints (huge, negative), floats (NaN, infinities, 1e308), strings, None, bools,
bytes, lists and callables, mixed with valid values so that every check is reached.

What must hold for every call:

* only documented exceptions come out: :class:`~keepalive.errors.KeepaliveError` subclasses
  (``InvalidSetting`` naming the argument, ``InvalidSocket``, ...); for calls that connect
  also ``OSError`` (``ConnectFailed`` is a KeepaliveError);
* no call hangs: each one is bounded (a worker thread or an asyncio wait);
* a refused call leaves its object exactly as it was: a real connected loopback socket keeps
  its keepalive options, ``TCP_NODELAY``, blocking mode and timeout, and is not registered
  with the scheduler; an asyncio transport keeps its protocol and socket options;
* an accepted call works: nothing raises later in the scheduler thread or the event loop
  (an accepted :class:`~keepalive.heartbeat.HeartbeatConfig` is one every driver can time).

Bounds: a few dozen examples per entry point, the whole file well under 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import loops
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepalive import aio, sync
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting, KeepaliveError
from keepalive.heartbeat import HeartbeatConfig
from keepalive.reconnect import Backoff

try:  # the message framings (keepalive.framing), where this version has them
    from keepalive.framing import Lines

    FRAMINGS: list[object] = [None, Lines()]
except ImportError:  # pragma: no cover - an older tree
    FRAMINGS = [None]

BOUND = 5.0  # seconds any single call may take; reaching it is a hang
FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---------------------------------------------------------------------------------------------
# Arbitrary values


def _returns_none(*_args: object, **_kwargs: object) -> None:
    return None


def _raises(*_args: object, **_kwargs: object) -> None:
    raise ValueError("a hook that raises")


def _ping_bytes(*_args: object, **_kwargs: object) -> bytes:
    return b"PING\n"


async def _coroutine_hook(*_args: object, **_kwargs: object) -> None:
    return None


CALLABLES: list[object] = [_returns_none, _raises, _ping_bytes, _coroutine_hook, int, object]

ODD_NUMBERS: list[object] = [
    0,
    -1,
    1,
    2**31,
    2**63,
    2**64 + 1,
    10**400,
    -(10**400),
    0.0,
    -0.0,
    5e-324,
    1e-9,
    1e10,
    1e308,
    -1e308,
    math.nan,
    math.inf,
    -math.inf,
]

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(ODD_NUMBERS),
    st.text(max_size=6),
    st.binary(max_size=6),
    st.lists(st.integers(), max_size=3),
    st.sampled_from(CALLABLES),
)

SECONDS = st.one_of(
    st.sampled_from([0.05, 1, 30, 3600.0, 86400 * 300]),
    st.sampled_from(ODD_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
)
COUNTS = st.one_of(st.integers(min_value=-3, max_value=5), st.sampled_from(ODD_NUMBERS))


@st.composite
def heartbeat_configs(draw: st.DrawFn) -> HeartbeatConfig:
    """A HeartbeatConfig from arbitrary numbers when it accepts them, else a plain one: every
    config a user can make reaches the drivers."""
    try:
        interval: Any = draw(SECONDS)  # junk on purpose: any type, any value
        timeout: Any = draw(SECONDS)
        misses: Any = draw(COUNTS)
        return HeartbeatConfig(interval, timeout, misses)
    except KeepaliveError:
        return HeartbeatConfig(interval=draw(st.sampled_from([0.05, 30.0])), timeout=10.0)


KEEPALIVES = st.sampled_from(
    [None, KeepaliveConfig(), KeepaliveConfig(idle=1, interval=1, count=1, user_timeout=30)]
)
PINGS = st.sampled_from([b"PING\n", bytearray(b"P\n"), memoryview(b"PING\n"), _ping_bytes])
PONGS = st.sampled_from([b"PONG\n", b"PONG\r\n", None])
OMIT = object()  # leave the argument out: its default


@st.composite
def arguments(
    draw: st.DrawFn, func: Callable[..., object], good: dict[str, st.SearchStrategy[Any]]
) -> dict[str, object]:
    """Keyword arguments for every keyword parameter of ``func`` (whatever its signature is
    today): each left out, valid (``good``, else its default) or arbitrary junk."""
    kwargs: dict[str, object] = {}
    for name, param in inspect.signature(func).parameters.items():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY and name not in good:
            continue
        choice = draw(st.integers(0, 9))
        if choice < 4:
            continue  # OMIT
        if choice < 7:
            if name in good:
                kwargs[name] = draw(good[name])
            elif param.default is not inspect.Parameter.empty:
                kwargs[name] = param.default
            continue
        kwargs[name] = draw(JUNK)
    return kwargs


def outcome(call: Callable[[], Any]) -> tuple[Any, Exception | None]:
    """``(result, None)``, or ``(None, the exception)`` the call raised."""
    try:
        return call(), None
    except Exception as exc:
        return None, exc


async def outcome_async(awaitable: Coroutine[Any, Any, Any]) -> tuple[Any, Exception | None]:
    """:func:`outcome` for a coroutine, bounded by BOUND seconds."""
    try:
        return await bounded_async(awaitable), None
    except Exception as exc:
        return None, exc


def documented(exc: BaseException, *, connects: bool = False) -> bool:
    """Whether ``exc`` is one of the documented exceptions."""
    if isinstance(exc, KeepaliveError):
        return True
    return connects and isinstance(exc, OSError)


def check_refusal(exc: BaseException, kwargs: dict[str, object], *, connects: bool = False) -> None:
    if not documented(exc, connects=connects):
        raise AssertionError(f"undocumented {type(exc).__name__} for {kwargs!r}") from exc
    if isinstance(exc, InvalidSetting) and not connects:
        assert exc.field, f"an InvalidSetting naming no field: {exc!r}"


# ---------------------------------------------------------------------------------------------
# Peers and state


class Peer:
    """A loopback listener whose connections a thread accepts and keeps open; and a port
    that refuses (bound, not listening)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.server.getsockname()[1]
        self.refuser = socket.socket()
        self.refuser.bind(("127.0.0.1", 0))
        self.refused_port = self.refuser.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.server.settimeout(0.05)
        while not self._stop:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)
            if len(self.accepted) > 200:
                for old in self.accepted[:100]:
                    old.close()
                del self.accepted[:100]

    def close(self) -> None:
        self._stop = True
        self._thread.join(BOUND)
        self.server.close()
        self.refuser.close()
        for conn in self.accepted:
            conn.close()


PEER = Peer()  # module-wide: the strategies need its ports before fixtures exist


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    yield PEER
    PEER.close()


@pytest.fixture
def thread_errors() -> Iterator[list[threading.ExceptHookArgs]]:
    """Exceptions that end threads (the scheduler's, a supervisor's) during the test."""
    errors: list[threading.ExceptHookArgs] = []
    previous = threading.excepthook
    threading.excepthook = errors.append
    try:
        yield errors
    finally:
        threading.excepthook = previous


def _option_names() -> list[tuple[int, int]]:
    names = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE), (socket.IPPROTO_TCP, socket.TCP_NODELAY)]
    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT"):
        if hasattr(socket, name):
            names.append((socket.IPPROTO_TCP, getattr(socket, name)))
    return names


OPTIONS = _option_names()
# Values nobody configures by default, so that any change shows.
MARKS = {"TCP_KEEPIDLE": 4321, "TCP_KEEPINTVL": 43, "TCP_KEEPCNT": 7, "TCP_USER_TIMEOUT": 12345}


def mark(sock: socket.socket) -> None:
    for name, value in MARKS.items():
        if hasattr(socket, name):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def options(sock: Any) -> tuple[object, ...]:
    """A socket's (or asyncio TransportSocket's) options, descriptor and blocking mode."""
    fd = sock.fileno()
    values: list[object] = [fd]
    for level, name in OPTIONS:
        try:
            values.append(sock.getsockopt(level, name))
        except OSError as exc:
            values.append(exc.errno)
    values.append(os.get_blocking(fd) if fd >= 0 else None)
    return tuple(values)


def state(sock: socket.socket) -> tuple[object, ...]:
    return (*options(sock), sock.gettimeout())


# ---------------------------------------------------------------------------------------------
# HeartbeatConfig


@FUZZ
@given(interval=st.one_of(SECONDS, JUNK), timeout=st.one_of(SECONDS, JUNK), misses=COUNTS)
def test_heartbeat_config(interval: object, timeout: object, misses: object) -> None:
    config, refused = outcome(lambda: HeartbeatConfig(interval, timeout, misses))  # type: ignore[arg-type]
    if refused is not None:
        assert isinstance(refused, InvalidSetting), repr(refused)
        assert refused.field in {"interval", "timeout", "misses"}
        return
    assert isinstance(config, HeartbeatConfig)
    for seconds in (config.interval, config.timeout):
        assert type(seconds) is float
        # Every timer API must take it: threading's waits, socket timeouts, asyncio.
        assert 0 < seconds <= threading.TIMEOUT_MAX
    assert isinstance(config.misses, int)
    assert config.misses >= 1


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("interval", {"interval": 1e10, "timeout": 1}),
        ("interval", {"interval": 1e308, "timeout": 1}),
        ("interval", {"interval": 10**12, "timeout": 1}),
        ("timeout", {"interval": 1, "timeout": 1e10}),
        ("timeout", {"interval": 1, "timeout": 1e308}),
    ],
)
def test_heartbeat_config_refuses_seconds_no_timer_takes(
    field: str, kwargs: dict[str, Any]
) -> None:
    """Seconds beyond threading.TIMEOUT_MAX (and far below it: the scheduler adds them to
    the clock) used to be accepted, then killed the blocking scheduler thread with an
    OverflowError, or raised a bare OverflowError after the socket was made non-blocking."""
    with pytest.raises(InvalidSetting) as info:
        HeartbeatConfig(**kwargs)
    assert info.value.field == field


EDGE_SECONDS = [5e-324, 1e-300, 1e-7, 0.001, 86400 * 365.0, 86400 * 366.0, 1e10, 1e308]
EDGE_CONFIGS = [(edge, 1.0) for edge in EDGE_SECONDS] + [(1.0, edge) for edge in EDGE_SECONDS]


@pytest.mark.parametrize(("interval", "timeout"), EDGE_CONFIGS)
@pytest.mark.usefixtures("event_loop_kind")
def test_every_accepted_config_works_in_every_driver(
    peer: Peer,
    pool: ThreadPoolExecutor,
    thread_errors: list[threading.ExceptHookArgs],
    interval: float,
    timeout: float,
) -> None:
    """A HeartbeatConfig either refuses seconds at construction (InvalidSetting naming the
    field) or every driver takes them: no OverflowError in the scheduler thread, no
    ValueError from the timer grid, no broken streams."""
    config, refused = outcome(lambda: HeartbeatConfig(interval=interval, timeout=timeout))
    if refused is not None:
        assert isinstance(refused, InvalidSetting), repr(refused)
        assert refused.field == ("interval" if interval != 1.0 else "timeout")
        return
    assert isinstance(config, HeartbeatConfig)
    with socket.create_connection(("127.0.0.1", peer.port), timeout=BOUND) as sock:
        wrapped = bounded(pool, lambda: sync.monitor(sock, heartbeat=config))
        assert isinstance(wrapped, sync.MonitoredSocket)
        time.sleep(0.02)
        wrapped.close()
    assert not thread_errors, f"the scheduler thread died: {thread_errors[0].exc_value!r}"

    async def drive() -> None:
        loop = asyncio.get_running_loop()
        inner = asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop)
        aio.HeartbeatProtocol(inner, config)
        reader, writer = await streams(peer.port)
        aio.monitor_streams(reader, writer, heartbeat=config)
        await asyncio.sleep(0.02)
        assert not writer.transport.is_closing(), "the heartbeat broke the streams"
        writer.transport.abort()
        opened = await bounded_async(
            aio.open_connection("127.0.0.1", peer.port, heartbeat=config, retry=None)
        )
        await asyncio.sleep(0.02)
        assert not opened[1].transport.is_closing(), "open_connection returned broken streams"
        opened[1].transport.abort()

    run_bounded(drive)


# ---------------------------------------------------------------------------------------------
# Blocking: sync.monitor, sync.Supervisor


def bounded(pool: ThreadPoolExecutor, call: Callable[[], object]) -> object:
    """``call()`` in a worker thread, at most BOUND seconds; its result or its exception."""
    future = pool.submit(call)
    try:
        return future.result(BOUND)
    except FutureTimeout:
        pytest.fail(f"the call did not return within {BOUND} s")


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


MONITOR_GOOD: dict[str, st.SearchStrategy[Any]] = {
    "heartbeat": heartbeat_configs(),
    "ping": PINGS,
    "pong": PONGS,
    "framing": st.sampled_from(FRAMINGS),
    "on_dead": st.sampled_from([None, _returns_none]),
    "keepalive": KEEPALIVES,
}


@FUZZ
@given(
    kwargs=arguments(sync.monitor, MONITOR_GOOD),
    timeout=st.sampled_from([None, 0.0, 2.5]),
    nodelay=st.booleans(),
)
def test_sync_monitor(
    peer: Peer,
    pool: ThreadPoolExecutor,
    thread_errors: list[threading.ExceptHookArgs],
    kwargs: dict[str, object],
    timeout: float | None,
    nodelay: bool,
) -> None:
    kwargs.setdefault("heartbeat", HeartbeatConfig(interval=30, timeout=10))
    sock = socket.create_connection(("127.0.0.1", peer.port), timeout=BOUND)
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
        mark(sock)
        before = state(sock)
        monitors_before = sync.active_monitors()
        wrapped, refused = outcome(lambda: bounded(pool, lambda: sync.monitor(sock, **kwargs)))  # type: ignore[arg-type]
        if refused is not None:
            check_refusal(refused, kwargs)
            assert state(sock) == before, f"refused ({refused!r}) but the socket was changed"
            assert sync.active_monitors() == monitors_before
            return
        assert isinstance(wrapped, sync.MonitoredSocket)
        time.sleep(0.002)  # let the scheduler thread take the new deadline
        wrapped.close()
    finally:
        sock.close()
    assert not thread_errors, f"a thread died: {thread_errors[0].exc_value!r} for {kwargs!r}"


def test_sync_monitor_refuses_other_objects(pool: ThreadPoolExecutor) -> None:
    config = HeartbeatConfig(interval=30, timeout=10)
    junks: list[Any] = [None, 3, "sock", b"sock", [], object(), _returns_none]
    for junk in junks:
        with pytest.raises(KeepaliveError):
            bounded(pool, functools.partial(sync.monitor, junk, heartbeat=config))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unconnected = socket.socket()
    with udp, unconnected:
        for sock in (udp, unconnected):
            before = state(sock)
            with pytest.raises(KeepaliveError):
                bounded(pool, functools.partial(sync.monitor, sock, heartbeat=config))
            assert state(sock) == before


SUPERVISOR_GOOD: dict[str, st.SearchStrategy[Any]] = {
    "keepalive": KEEPALIVES,
    "heartbeat": st.one_of(st.none(), heartbeat_configs()),
    "ping": PINGS,
    "pong": PONGS,
    "framing": st.sampled_from(FRAMINGS),
    "retry": st.sampled_from([Backoff(), Backoff.constant(0.01, max_attempts=3)]),
    "healthy_after": st.sampled_from([0, 0.5, 30.0]),
    "connect_timeout": st.sampled_from([None, 0.5]),
    "on_connect": st.sampled_from([None, *CALLABLES]),
    "on_disconnect": st.sampled_from([None, _returns_none]),
    "on_backoff": st.sampled_from([None, _returns_none]),
    "name": st.sampled_from([None, "fuzz"]),
    "limit": st.sampled_from([1, 2**16]),
}


def addresses(peer: Peer) -> st.SearchStrategy[object]:
    hosts = st.one_of(st.sampled_from(["127.0.0.1", "localhost", "", "\0", "a..b"]), JUNK)
    ports = st.one_of(st.sampled_from([peer.port, peer.refused_port]), JUNK)
    return st.one_of(
        st.tuples(st.just("127.0.0.1"), st.sampled_from([peer.port, peer.refused_port])),
        st.tuples(hosts, ports),
        st.tuples(hosts, ports, ports),
        JUNK,
    )


@FUZZ
@given(address=addresses(PEER), kwargs=arguments(sync.Supervisor, SUPERVISOR_GOOD))
def test_sync_supervisor(
    peer: Peer,
    pool: ThreadPoolExecutor,
    thread_errors: list[threading.ExceptHookArgs],
    address: object,
    kwargs: dict[str, object],
) -> None:
    sup, refused = outcome(lambda: bounded(pool, lambda: sync.Supervisor(address, **kwargs)))  # type: ignore[arg-type]
    if refused is not None:
        check_refusal(refused, kwargs)
        return
    assert isinstance(sup, sync.Supervisor)
    sup.start()
    time.sleep(0.005)
    bounded(pool, sup.close)
    assert not thread_errors, f"a thread died: {thread_errors[0].exc_value!r} for {kwargs!r}"


# ---------------------------------------------------------------------------------------------
# asyncio: open_connection, monitor_streams, monitor, HeartbeatProtocol, Supervisor


def run_bounded(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a fresh loop for one example; fails on a hang or on an error the loop reported."""
    loop_errors: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
        task = asyncio.ensure_future(make())
        done, _ = await asyncio.wait({task}, timeout=BOUND)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=BOUND)
            pytest.fail(f"no answer within {BOUND} s")
        task.result()
        await asyncio.sleep(0.002)  # let the heartbeat's timer and callbacks run once

    loops.run(main())
    assert not loop_errors, f"the event loop reported: {loop_errors[0]!r}"


async def bounded_async(awaitable: Coroutine[Any, Any, Any]) -> Any:
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=BOUND)
        pytest.fail(f"no answer within {BOUND} s")
    return task.result()


OPEN_GOOD: dict[str, st.SearchStrategy[Any]] = {
    "keepalive": KEEPALIVES,
    "heartbeat": st.one_of(st.none(), heartbeat_configs()),
    "ping": PINGS,
    "pong": PONGS,
    "framing": st.sampled_from(FRAMINGS),
    "on_dead": st.sampled_from([None, _returns_none]),
    "retry": st.sampled_from([None, Backoff.constant(0.01, max_attempts=2)]),
    "connect_timeout": st.sampled_from([None, 0.5]),
    "limit": st.sampled_from([1, 2**16]),
}


@FUZZ
@given(
    host=st.one_of(st.sampled_from(["127.0.0.1", "localhost", "a..b"]), JUNK),
    port=st.one_of(st.sampled_from([PEER.port, PEER.refused_port, str(PEER.port)]), JUNK),
    kwargs=arguments(aio.open_connection, OPEN_GOOD),
)
@pytest.mark.usefixtures("event_loop_kind")
def test_aio_open_connection(
    peer: Peer, host: object, port: object, kwargs: dict[str, object]
) -> None:
    async def attempt() -> None:
        opened, refused = await outcome_async(
            aio.open_connection(host, port, **kwargs)  # type: ignore[arg-type]
        )
        if refused is not None:
            check_refusal(refused, kwargs, connects=True)
            return
        reader, writer = opened
        assert isinstance(reader, asyncio.StreamReader)
        assert not writer.transport.is_closing(), "open_connection returned closed streams"
        await asyncio.sleep(0.002)
        writer.transport.abort()

    run_bounded(attempt)


WRAP_GOOD: dict[str, st.SearchStrategy[Any]] = {
    "heartbeat": heartbeat_configs(),
    "ping": PINGS,
    "pong": PONGS,
    "framing": st.sampled_from(FRAMINGS),
    "on_dead": st.sampled_from([None, _returns_none]),
    "keepalive": KEEPALIVES,
}


async def streams(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    mark(writer.transport.get_extra_info("socket"))
    return reader, writer


def transport_state(transport: asyncio.BaseTransport) -> tuple[object, ...]:
    return (transport.get_protocol(), *options(transport.get_extra_info("socket")))


@FUZZ
@given(
    kwargs=arguments(aio.monitor_streams, WRAP_GOOD),
    reader_junk=st.one_of(st.none(), JUNK),
    writer_junk=st.one_of(st.none(), JUNK),
)
@pytest.mark.usefixtures("event_loop_kind")
def test_aio_wrap(
    peer: Peer, kwargs: dict[str, object], reader_junk: object, writer_junk: object
) -> None:
    kwargs.setdefault("heartbeat", HeartbeatConfig(interval=30, timeout=10))

    async def attempt() -> None:
        reader, writer = await streams(peer.port)
        before = transport_state(writer.transport)
        use_reader = reader if reader_junk is None else reader_junk
        use_writer = writer if writer_junk is None else writer_junk
        _, refused = outcome(lambda: aio.monitor_streams(use_reader, use_writer, **kwargs))  # type: ignore[arg-type]
        if refused is not None:
            check_refusal(refused, kwargs)
            assert transport_state(writer.transport) == before, f"refused ({refused!r}), changed"
        else:
            assert isinstance(aio.monitor_of(writer), aio.HeartbeatProtocol)
            await asyncio.sleep(0.002)
        writer.transport.abort()

    run_bounded(attempt)


@FUZZ
@given(
    kwargs=arguments(aio.monitor, {**WRAP_GOOD, "protocol": st.just(None)}),
    transport_junk=st.one_of(st.none(), JUNK),
)
@pytest.mark.usefixtures("event_loop_kind")
def test_aio_monitor_transport(
    peer: Peer, kwargs: dict[str, object], transport_junk: object
) -> None:
    kwargs.setdefault("heartbeat", HeartbeatConfig(interval=30, timeout=10))

    async def attempt() -> None:
        _reader, writer = await streams(peer.port)
        transport = writer.transport
        before = transport_state(transport)
        target = transport if transport_junk is None else transport_junk
        monitor, refused = outcome(lambda: aio.monitor(target, **kwargs))  # type: ignore[arg-type]
        if refused is not None:
            check_refusal(refused, kwargs)
            assert transport_state(transport) == before, f"refused ({refused!r}), changed"
        else:
            assert transport.get_protocol() is monitor
            await asyncio.sleep(0.002)
        transport.abort()

    run_bounded(attempt)


@FUZZ
@given(
    kwargs=arguments(aio.HeartbeatProtocol, {**WRAP_GOOD}),
    heartbeat=st.one_of(heartbeat_configs(), JUNK),
    protocol_junk=st.one_of(st.none(), JUNK),
)
@pytest.mark.usefixtures("event_loop_kind")
def test_aio_heartbeat_protocol(
    kwargs: dict[str, object], heartbeat: object, protocol_junk: object
) -> None:
    kwargs.pop("heartbeat", None)
    kwargs.pop("protocol", None)

    async def attempt() -> None:
        loop = asyncio.get_running_loop()
        inner = asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop)
        protocol = inner if protocol_junk is None else protocol_junk
        monitor, refused = outcome(lambda: aio.HeartbeatProtocol(protocol, heartbeat, **kwargs))  # type: ignore[arg-type]
        if refused is not None:
            check_refusal(refused, kwargs)
            return
        assert isinstance(monitor, aio.HeartbeatProtocol)
        assert monitor.protocol is protocol

    run_bounded(attempt)


AIO_SUPERVISOR_GOOD = {
    **SUPERVISOR_GOOD,
    "on_connect": st.sampled_from([None, _coroutine_hook, *CALLABLES]),
    "handler": st.sampled_from([None, _coroutine_hook]),
}


@FUZZ
@given(address=addresses(PEER), kwargs=arguments(aio.Supervisor, AIO_SUPERVISOR_GOOD))
@pytest.mark.usefixtures("event_loop_kind")
def test_aio_supervisor(peer: Peer, address: object, kwargs: dict[str, object]) -> None:
    async def attempt() -> None:
        sup, refused = outcome(lambda: aio.Supervisor(address, **kwargs))  # type: ignore[arg-type]
        if refused is not None:
            check_refusal(refused, kwargs)
            return
        assert isinstance(sup, aio.Supervisor)
        sup.start()
        for _ in range(3):
            await asyncio.sleep(0)
        await bounded_async(sup.aclose())

    run_bounded(attempt)
