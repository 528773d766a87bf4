"""The fast paths of keepalive.aio (issue 14), on real loopback sockets, on asyncio and uvloop.

* **Views on the data path.** :func:`keepalive.aio.open_connection` hands its StreamReader
  views of the loop's shared read buffer instead of copies while no pong is owed, and keeps
  the pong matcher's line boundary from the chunk's last line end alone. The fast path must
  switch off the moment a pong is owed, and whenever only the matcher can decide (bytes held
  back, a chunk without a line end): the bytes must stay exact and pongs must still be whole
  lines only.
* **One bucket entry per beat.** After a ping the monitor wakes for the next ping, so a pong
  that comes back promptly moves no wake-up and leaves no stale entry behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, NamedTuple

import loops
import pytest
from loops import wait_until

from keepalive import aio
from keepalive.errors import PeerUnresponsive
from keepalive.framing import FixedSize, Lines, MessagePongs
from keepalive.heartbeat import HeartbeatConfig

pytestmark = pytest.mark.usefixtures("event_loop_kind")

# No ping of its own during a test: the test sends them with send_ping().
QUIET = HeartbeatConfig(interval=60.0, timeout=30.0)


def run(coroutine: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    return loops.run(asyncio.wait_for(coroutine, timeout))


class ScriptedPeer:
    """A server the test speaks for: it hands the test each accepted connection's streams."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.accepted.put((reader, writer))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, PeerUnresponsive):
        await writer.wait_closed()


def the_monitor(writer: asyncio.StreamWriter) -> aio.HeartbeatProtocol:
    found = aio.monitor_of(writer)
    assert found is not None
    return found


async def ping_and_await_it(
    monitor: aio.HeartbeatProtocol, peer_reader: asyncio.StreamReader
) -> None:
    assert monitor.send_ping()
    assert await peer_reader.readline() == b"PING\n"


class Dialled(NamedTuple):
    """Both ends of one aio.open_connection() to a ScriptedPeer, and the client's monitor."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    monitor: aio.HeartbeatProtocol
    peer_reader: asyncio.StreamReader
    peer_writer: asyncio.StreamWriter


@contextlib.asynccontextmanager
async def dialled(heartbeat: HeartbeatConfig = QUIET, **options: Any) -> AsyncIterator[Dialled]:
    """aio.open_connection() to a fresh ScriptedPeer; both ends are closed on the way out."""
    peer = ScriptedPeer()
    address = await peer.start()
    reader, writer = await aio.open_connection(*address, heartbeat=heartbeat, **options)
    monitor = the_monitor(writer)
    peer_reader, peer_writer = await peer.accepted.get()
    try:
        yield Dialled(reader, writer, monitor, peer_reader, peer_writer)
    finally:
        await close(writer)
        peer_writer.close()
        await peer.stop()


@contextlib.asynccontextmanager
async def answering_pings(conn: Dialled) -> AsyncIterator[None]:
    """The peer answers every PING line with a PONG line until the block ends."""

    async def answer() -> None:
        with contextlib.suppress(ConnectionError):
            while await conn.peer_reader.readline() == b"PING\n":
                conn.peer_writer.write(b"PONG\n")

    answering = asyncio.ensure_future(answer())
    try:
        yield
    finally:
        answering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await answering


# ---------------------------------------------------------------------------------------------
# Views on the data path


@pytest.mark.parametrize(
    ("options", "views"),
    [
        ({}, True),  # the default pong: PONG lines
        ({"pong": None}, True),  # no matcher at all
        ({"pong": b"PONG\r\n", "framing": Lines(b"\r\n")}, False),  # two-byte delimiter
        ({"pong": b"PONG", "framing": FixedSize(4)}, False),  # not lines
        ({"pong": MessagePongs(lambda m: m == b"PONG\n", Lines())}, True),  # a predicate pong
    ],
)
def test_open_connection_hands_views_only_to_line_matchers_it_can_track(
    options: dict[str, Any], views: bool
) -> None:
    async def main() -> None:
        async with dialled(**options) as (reader, _, monitor, _, peer_writer):
            assert monitor._settings.views is views
            payload = bytes(range(256)) * 64 + b"\n" + b"tail without end"
            peer_writer.write(payload)
            assert await reader.readexactly(len(payload)) == payload
            assert monitor.stats.bytes_received == len(payload)

    run(main())


def test_monitor_on_an_existing_transport_never_hands_views() -> None:
    # Only open_connection knows that the protocol behind it copies what it gets at once.
    async def main() -> None:
        peer = ScriptedPeer()
        address = await peer.start()
        reader, writer = await asyncio.open_connection(*address)
        aio.monitor_streams(reader, writer, heartbeat=QUIET)
        assert not the_monitor(writer)._settings.views
        await close(writer)
        await peer.stop()

    run(main())


def test_line_boundaries_survive_view_chunks_of_every_shape() -> None:
    # Each chunk is read in full before the next step, so each is one read of its own.
    async def main() -> None:
        async with dialled() as (reader, _, monitor, peer_reader, peer_writer):
            assert monitor._settings.views

            async def read_in_full_then_ping(chunk: bytes) -> None:
                peer_writer.write(chunk)
                assert await reader.readexactly(len(chunk)) == chunk
                await ping_and_await_it(monitor, peer_reader)

            # 1. A chunk whose last line is unfinished (the fast path feeds the matcher b"\nyy"):
            #    a PONG line sent next continues that line, so it is the application's.
            await read_in_full_then_ping(b"x" * 5000 + b"\n" + b"yy")
            peer_writer.write(b"PONG\n")
            assert await reader.readexactly(5) == b"PONG\n"
            assert monitor.pongs_received == 0
            # ... and the next whole PONG line is the owed pong (the slow path, a pong owed).
            peer_writer.write(b"PONG\nafter\n")
            assert await reader.readexactly(6) == b"after\n"
            assert monitor.pongs_received == 1

            # 2. A chunk ending exactly at a line end: the next PONG line is a pong.
            await read_in_full_then_ping(b"z" * 3000 + b"\n")
            peer_writer.write(b"PONG\nnext\n")
            assert await reader.readexactly(5) == b"next\n"
            assert monitor.pongs_received == 2

            # 3. A chunk without any line end (only the matcher can track it: no fast path),
            #    then a whole PONG line not owed: both reach the application untouched.
            await read_in_full_then_ping(b"q" * 4000)
            peer_writer.write(b"PONG\n")  # ends the q... line: not a pong
            assert await reader.readexactly(5) == b"PONG\n"
            peer_writer.write(b"PONG\n")  # now a whole line while the ping is owed: the pong
            peer_writer.write(b"PONG\n")  # and one more, owed by nobody: the application's
            assert await reader.readexactly(5) == b"PONG\n"
            assert monitor.pongs_received == 3
            assert monitor.stats.bytes_received == 5003 + 5 + 11 + 3001 + 10 + 4000 + 15

    run(main())


def test_a_pong_split_across_reads_is_held_back_and_the_fast_path_waits_for_it() -> None:
    async def main() -> None:
        async with dialled() as (reader, _, monitor, peer_reader, peer_writer):
            await ping_and_await_it(monitor, peer_reader)
            peer_writer.write(b"PO")  # may still be the pong: held back by the matcher
            await peer_writer.drain()
            await asyncio.sleep(0.05)
            assert monitor.pongs_received == 0
            # The rest of the pong, then bulk lines: the held bytes go through the matcher first.
            bulk = b"b" * 1023 + b"\n"
            peer_writer.write(b"NG\n" + bulk * 64)
            assert await reader.readexactly(len(bulk) * 64) == bulk * 64
            assert monitor.pongs_received == 1

    run(main())


def test_bulk_bytes_arrive_exact_through_views_while_pings_go_out() -> None:
    # 32 MiB of 1 KiB lines, an extra ping every 5 ms (bytes flowing in keep the heartbeat's
    # own pings away) answered in between whole lines by the peer (it writes whole lines
    # only, so every PONG it sends sits at a boundary): chunks alternate between the fast
    # path and the matcher's.
    heartbeat = HeartbeatConfig(interval=1.0, timeout=5.0)
    line = b"0123456789abcdef" * 63 + b"PONG\n" + b"...\n"  # PONG\n inside a line: data

    async def main() -> None:
        async with dialled(heartbeat) as conn, answering_pings(conn):
            reader, _, monitor, _, peer_writer = conn
            lines = 32 * 1024 * 1024 // len(line)

            async def send_bulk() -> None:
                for _ in range(lines):
                    peer_writer.write(line)
                    if peer_writer.transport.get_write_buffer_size() > 1 << 20:
                        await peer_writer.drain()
                await peer_writer.drain()

            async def ping_often() -> None:
                while True:
                    monitor.send_ping()
                    await asyncio.sleep(0.005)

            sending = asyncio.ensure_future(send_bulk())
            pinging = asyncio.ensure_future(ping_often())
            received = bytearray()
            expected = line * lines
            while len(received) < len(expected):
                received += await reader.read(65536)
            await sending
            pinging.cancel()
            assert bytes(received) == expected
            assert monitor.pings_sent > 0
            await wait_until(lambda: monitor.pongs_received == monitor.pings_sent)

    run(main(), timeout=60)


# ---------------------------------------------------------------------------------------------
# The scheduler: one bucket entry per beat


def test_prompt_pongs_leave_no_stale_wake_ups_behind() -> None:
    # Before issue 14 every beat left a stale entry at the end of the ping's window (here
    # 5 s: about 20 of them after 2 s of beats every 0.1 s). Now the monitor wakes for the
    # next ping and a pong back within the same 1/64 interval moves nothing.
    heartbeat = HeartbeatConfig(interval=0.1, timeout=5.0)

    async def main() -> None:
        async with dialled(heartbeat) as conn, answering_pings(conn):
            monitor = conn.monitor
            most_entries = 0
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                most_entries = max(most_entries, aio.scheduler_stats().entries)
                await asyncio.sleep(0.01)
            assert monitor.pongs_received >= 5
            # One live entry; a late pong (a busy machine) may leave one stale entry per beat,
            # but not one per beat of the whole window.
            assert most_entries <= 6, most_entries
            assert not monitor.dead

    run(main())


def test_a_missing_pong_still_gets_its_verdict_at_the_window_end_not_earlier() -> None:
    # The monitor wakes at the next ping's time first (interval < timeout): that wake-up
    # must only poll, and the verdict must come when the window ends.
    heartbeat = HeartbeatConfig(interval=0.05, timeout=0.4, misses=1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with dialled(heartbeat) as (reader, _, monitor, peer_reader, _):
            assert await peer_reader.readline() == b"PING\n"
            pinged_at = loop.time()
            with pytest.raises(PeerUnresponsive):
                await reader.read(100)
            elapsed = loop.time() - pinged_at
            assert heartbeat.timeout - 0.05 <= elapsed <= heartbeat.timeout + 0.5
            assert monitor.pings_sent == 1  # no second ping went out while the first was owed

    run(main())
