"""Fuzzing keepalive.trio's entry points with arbitrary arguments (as tests/test_fuzz_drivers.py
does for the other front-ends): only documented exceptions come out
(:class:`~keepalive.errors.KeepaliveError` subclasses naming the argument; ``OSError`` for a
connect), no call hangs, and an accepted call works (its stream is usable and closes)."""

from __future__ import annotations

import math
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepalive.config import KeepaliveConfig
from keepalive.errors import KeepaliveError
from keepalive.framing import Lines
from keepalive.heartbeat import HeartbeatConfig
from keepalive.reconnect import Backoff
from keepalive.testing import EchoServer
from keepalive.trio import Supervisor, open_connection

BOUND = 5.0  # seconds any single call may take; reaching it is a hang
FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ODD: list[object] = [
    None,
    0,
    -1,
    2**70,
    1e308,
    math.nan,
    math.inf,
    True,
    "x",
    b"",
    b"PONG\n",
    [],
    print,
    lambda: b"PING\n",
    Lines(),
    HeartbeatConfig(interval=0.05, timeout=0.5),
    KeepaliveConfig(),
    Backoff(max_attempts=1),
]
NAMES = (
    "keepalive",
    "heartbeat",
    "ping",
    "pong",
    "framing",
    "on_dead",
    "retry",
    "connect_timeout",
    "ssl_context",
    "server_hostname",
)
_ARGUMENTS = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(ODD), max_size=4)


@FUZZ
@given(arguments=_ARGUMENTS)
def test_open_connection_refuses_bad_arguments_clearly(
    echo_server: EchoServer, arguments: dict[str, Any]
) -> None:
    async def main() -> None:
        with trio.fail_after(BOUND):
            try:
                stream = await open_connection(*echo_server.address, **arguments)
            except KeepaliveError:
                return
            async with stream:
                await stream.send_all(b"hello\n")
                assert await stream.receive_some()

    trio.run(main)


@FUZZ
@given(arguments=_ARGUMENTS.map(lambda found: {k: v for k, v in found.items() if k != "on_dead"}))
def test_the_supervisor_refuses_bad_arguments_clearly(
    echo_server: EchoServer, arguments: dict[str, Any]
) -> None:
    async def main() -> None:
        with trio.fail_after(BOUND):
            try:
                supervisor = Supervisor(echo_server.address, **arguments)
            except KeepaliveError:
                return
            async with supervisor as sup:
                try:
                    conn = await sup.wait_connected(BOUND / 2)
                except KeepaliveError:
                    return  # gave up: a one-attempt policy, a refused keepalive setting
                await conn.stream.send_all(b"hello\n")
                assert await conn.stream.receive_some()

    trio.run(main)
