"""What a heartbeat costs on the data path: monitored sockets and streams against plain ones.

The four data-path rows of issue 14, each a ratio of client CPU (``time.process_time``: the
whole client process, keepalive's scheduler thread included) in one run:

* **blocking round trip**: a 100-byte request line, its echo read back (``sendall``, then
  ``recv(4096)`` until the 100 bytes are in), through ``keepalive.sync.monitor`` against the
  same kind of plain socket; CPU per round trip. Goal <= 1.1x.
* **blocking bulk**: 256 MiB read with ``recv_into`` into a 64 KiB buffer. Goal <= 1.05x.
* **asyncio round trip**: ``keepalive.aio.open_connection(heartbeat=...)`` against
  ``asyncio.open_connection``: ``write``, then ``readexactly(100)``. Goal <= 1.05x.
* **asyncio bulk**: 256 MiB read with ``reader.read(65536)``. Goal <= 1.05x.

The peer is another process, pinned to the first CPU, one thread serving every connection:
it echoes lines and answers a ``PING`` line with ``PONG``, or sends the bulk bytes asked for
(lines of 1 KiB, as a line-framed pong filter sees in real traffic). The client is pinned to
the last CPU, and each group of rows (blocking, asyncio) runs in a freshly spawned process;
docs/benchmarks.md says which measured effect each of these precautions removes. Heartbeats
run at 1 Hz with pong filtering on (``PONG\\n`` lines), as an application would run them;
while bytes flow, no ping is due. Contenders alternate in blocks (plain, monitored,
monitored, plain, ...), so load from other work falls on both; a run's ratio is the median
over its pairs of blocks. ``--runs N`` repeats and prints medians and spreads; ``--json
PATH`` writes the rows for the docs.

    python benchmarks/datapath.py [--runs 5] [--json docs/data/bench-datapath.json]
    python benchmarks/datapath.py --quick        # a smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import selectors
import socket
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple, TypeAlias, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _measure.py: the shared report
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # measure this checkout
from _measure import (
    Report,
    ServerProcess,
    add_run_arguments,
    events_while_parent_lives,
    finish,
    listen,
    pin_cpu,
    positive_int,
)

from keepalive import aio, sync
from keepalive.heartbeat import HeartbeatConfig

PING, PONG = b"PING\n", b"PONG\n"
BEAT = HeartbeatConfig(interval=1.0, timeout=10.0)
MESSAGE = b"m" * 99 + b"\n"  # the 100-byte request; the echo is the response
BULK_LINE = b"b" * 1023 + b"\n"
BUFFER_SIZE = 64 * 1024
MiB = 1024 * 1024
ROUND_TRIP_LIMIT_BLOCKING = 1.10
BULK_LIMIT_BLOCKING = 1.05
ROUND_TRIP_LIMIT_ASYNC = 1.05
BULK_LIMIT_ASYNC = 1.05
# A group of rows measured in a process of its own: (address, trips, blocks, bulk, transfers).
ClientArgs: TypeAlias = tuple[tuple[str, int], int, int, int, int]
Client: TypeAlias = "Callable[[tuple[str, int], int, int, int, int], tuple[list[Pair], list[Pair]]]"


# -- the peer process ------------------------------------------------------------------------------


class _Connection:
    """One client of the peer: its request line, then echo or bulk."""

    __slots__ = ("bulk_left", "pending", "request", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.request: bytes | None = b""  # None once read
        self.pending = b""
        self.bulk_left = 0


def _peer(report_port: Connection) -> None:
    """Every connection served by this one thread (so that both contenders of a pair meet the
    same server thread: with a thread each, where the kernel placed each thread made one
    connection's round trips cost the client twice the CPU of the other's)."""
    block = BULK_LINE * 1024
    listener, selector = listen(report_port, backlog=128)

    def close(conn: _Connection) -> None:
        selector.unregister(conn.sock)
        conn.sock.close()

    for key, mask in events_while_parent_lives(selector):
        if key.fileobj is listener:
            with contextlib.suppress(BlockingIOError):
                sock, _ = listener.accept()
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(sock, selectors.EVENT_READ, _Connection(sock))
            continue
        conn: _Connection = key.data
        if mask & selectors.EVENT_WRITE:  # bulk: send until done, then wait for the close
            try:
                sent = conn.sock.send(block[: conn.bulk_left])
            except BlockingIOError:
                continue
            except OSError:
                close(conn)
                continue
            conn.bulk_left -= sent
            if not conn.bulk_left:
                selector.modify(conn.sock, selectors.EVENT_READ, conn)
            continue
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            close(conn)
            continue
        if conn.request is not None:  # the request line comes first
            head, newline, rest = data.partition(b"\n")
            conn.request += head
            if not newline:
                continue
            request, conn.request = conn.request, None
            if request.startswith(b"bulk "):
                conn.bulk_left = int(request.split()[1])
                selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
                continue
            data = rest
        if conn.bulk_left or not data:
            continue
        conn.pending += data
        end = conn.pending.rfind(b"\n") + 1
        if not end:
            continue
        lines, conn.pending = conn.pending[:end], conn.pending[end:]
        if PING in lines:
            lines = b"".join(
                PONG if line == PING else line for line in lines.splitlines(keepends=True)
            )
        try:
            conn.sock.sendall(lines)  # 100 bytes at a time: the buffer has room
        except OSError:
            close(conn)


class Peer(ServerProcess):
    """The echo and bulk server, in a process of its own (see :class:`ServerProcess`)."""

    def __init__(self) -> None:
        super().__init__(_peer, "peer")


# -- measuring -------------------------------------------------------------------------------------


# (plain, monitored): CPU seconds of one block of each contender.
Pair: TypeAlias = tuple[float, float]


class _RowLabels(NamedTuple):
    """What a row of the table says besides its figures."""

    name: str
    contender: str
    baseline: str
    limit: float
    loop: str | None


def _ratio(pairs: list[Pair]) -> float:
    return statistics.median(monitored / plain for plain, monitored in pairs)


def _monitored_median(pairs: list[Pair]) -> float:
    return statistics.median(monitored for _plain, monitored in pairs)


def _cpu(work: Callable[[], None]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


async def _cpu_async(work: Callable[[], Awaitable[None]]) -> float:
    start = time.process_time()
    await work()
    return time.process_time() - start


def _alternate(blocks: int, measure: Callable[[bool], float]) -> list[Pair]:
    """``blocks`` pairs, measured plain-monitored then monitored-plain in turn."""
    pairs = []
    for block in range(blocks):
        if block % 2 == 0:
            plain = measure(False)
            monitored = measure(True)
        else:
            monitored = measure(True)
            plain = measure(False)
        pairs.append((plain, monitored))
    return pairs


async def _alternate_async(blocks: int, measure: Callable[[bool], Awaitable[float]]) -> list[Pair]:
    pairs = []
    for block in range(blocks):
        if block % 2 == 0:
            plain = await measure(False)
            monitored = await measure(True)
        else:
            monitored = await measure(True)
            plain = await measure(False)
        pairs.append((plain, monitored))
    return pairs


def _connect(address: tuple[str, int], request: bytes) -> socket.socket:
    sock = socket.create_connection(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(request)
    return sock


def _monitored(sock: socket.socket) -> sync.MonitoredSocket:
    return sync.monitor(sock, heartbeat=BEAT, ping=PING, pong=PONG)


# -- blocking --------------------------------------------------------------------------------------


def _round_trips(sock: socket.socket | sync.MonitoredSocket, count: int) -> None:
    size = len(MESSAGE)
    for _ in range(count):
        sock.sendall(MESSAGE)
        received = 0
        while received < size:
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("the echo server closed the connection")
            received += len(data)


def _blocking_round_trip(address: tuple[str, int], count: int, blocks: int) -> list[Pair]:
    plain = _connect(address, b"echo\n")
    monitored = _monitored(_connect(address, b"echo\n"))
    try:
        _round_trips(plain, count // 4)  # warm both up
        _round_trips(monitored, count // 4)
        pairs = _alternate(
            blocks, lambda ours: _cpu(lambda: _round_trips(monitored if ours else plain, count))
        )
    finally:
        plain.close()
        monitored.close()
    return pairs


def _bulk_blocking(address: tuple[str, int], size: int, monitored: bool) -> float:
    sock = _connect(address, f"bulk {size}\n".encode())
    conn: socket.socket | sync.MonitoredSocket = _monitored(sock) if monitored else sock
    buffer = bytearray(BUFFER_SIZE)
    try:
        start = time.process_time()
        received = 0
        while received < size:
            count = conn.recv_into(buffer)
            if not count:
                raise ConnectionError(f"the bulk server closed after {received} of {size} bytes")
            received += count
        return time.process_time() - start
    finally:
        conn.close()


# -- asyncio ---------------------------------------------------------------------------------------


async def _round_trips_async(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int
) -> None:
    size = len(MESSAGE)
    for _ in range(count):
        writer.write(MESSAGE)
        await reader.readexactly(size)


async def _asyncio_round_trip(address: tuple[str, int], count: int, blocks: int) -> list[Pair]:
    plain = await asyncio.open_connection(*address)
    ours = await aio.open_connection(*address, heartbeat=BEAT, ping=PING, pong=PONG)
    for _reader, writer in (plain, ours):
        writer.write(b"echo\n")
    try:
        for reader, writer in (plain, ours):
            await _round_trips_async(reader, writer, count // 4)

        async def measure(monitored: bool) -> float:
            reader, writer = ours if monitored else plain
            return await _cpu_async(lambda: _round_trips_async(reader, writer, count))

        pairs = await _alternate_async(blocks, measure)
    finally:
        for _reader, writer in (plain, ours):
            writer.close()
    return pairs


async def _bulk_async(address: tuple[str, int], size: int, monitored: bool) -> float:
    if monitored:
        reader, writer = await aio.open_connection(*address, heartbeat=BEAT, ping=PING, pong=PONG)
    else:
        reader, writer = await asyncio.open_connection(*address)
    writer.write(f"bulk {size}\n".encode())
    try:
        start = time.process_time()
        received = 0
        while received < size:
            data = await reader.read(BUFFER_SIZE)
            if not data:
                raise ConnectionError(f"the bulk server closed after {received} of {size} bytes")
            received += len(data)
        return time.process_time() - start
    finally:
        writer.close()


# -- main ------------------------------------------------------------------------------------------


def _blocking_client(
    address: tuple[str, int], trips: int, blocks: int, bulk: int, transfers: int
) -> tuple[list[Pair], list[Pair]]:
    """The blocking rows' pairs: (round trips, bulk transfers)."""
    round_trips = _blocking_round_trip(address, trips, blocks)
    transfers_ = _alternate(transfers, lambda ours: _bulk_blocking(address, bulk, ours))
    return round_trips, transfers_


def _asyncio_client(
    address: tuple[str, int], trips: int, blocks: int, bulk: int, transfers: int
) -> tuple[list[Pair], list[Pair]]:
    """The asyncio rows' pairs: (round trips, bulk transfers)."""

    async def both() -> tuple[list[Pair], list[Pair]]:
        round_trips = await _asyncio_round_trip(address, trips, blocks)
        transfers_ = await _alternate_async(
            transfers, lambda ours: _bulk_async(address, bulk, ours)
        )
        return round_trips, transfers_

    return asyncio.run(both())


def _send_result(send: Connection, client: Client, args: ClientArgs) -> None:
    try:
        send.send(("ok", client(*args)))
    except BaseException:
        send.send(("error", traceback.format_exc()))
        raise


def _in_fresh_process(client: Client, args: ClientArgs) -> tuple[list[Pair], list[Pair]]:
    """Run ``client`` in a new interpreter: each group of rows starts from the same process
    state. (In one process, plain asyncio streams measured 27-32 µs of CPU per round trip
    once the blocking rows had run, against 13-14 µs before them and beside monitored
    streams that stayed at 13-14 µs: a history effect, not either contender's cost.)"""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_send_result, args=(send, client, args))
    process.start()
    send.close()
    try:
        status, result = receive.recv()
    except EOFError:
        raise RuntimeError(f"the {client.__name__} process died without a result") from None
    finally:
        process.join()
    if status != "ok":
        raise RuntimeError(f"{client.__name__} failed in its process:\n{result}")
    return cast(tuple[list[Pair], list[Pair]], result)


def _row(
    report: Report, labels: _RowLabels, pairs: list[Pair], *, value: float, unit: str, detail: str
) -> None:
    """The row of ``labels``: the median ratio over the pairs, the monitored side's ``value``."""
    report.row(
        labels.name,
        contender=labels.contender,
        baseline=labels.baseline,
        limit=labels.limit,
        loop=labels.loop,
        ratio=_ratio(pairs),
        value=value,
        unit=unit,
        detail=detail,
    )


def _measure(
    report: Report, address: tuple[str, int], *, trips: int, blocks: int, bulk: int, transfers: int
) -> None:
    size_label = f"{bulk // MiB} MiB"
    args: ClientArgs = (address, trips, blocks, bulk, transfers)
    asyncio_streams = "keepalive.aio.open_connection streams, heartbeat on"
    groups: list[tuple[Client, _RowLabels, _RowLabels]] = [
        (
            _blocking_client,
            _RowLabels(
                "blocking round trip, 100 B",
                "keepalive.sync.monitor socket",
                "plain socket",
                ROUND_TRIP_LIMIT_BLOCKING,
                None,
            ),
            _RowLabels(
                f"blocking bulk recv_into, {size_label}",
                "keepalive.sync.monitor socket, 64 KiB buffer",
                "plain socket, 64 KiB buffer",
                BULK_LIMIT_BLOCKING,
                None,
            ),
        ),
        (
            _asyncio_client,
            _RowLabels(
                "asyncio round trip, 100 B",
                asyncio_streams,
                "asyncio.open_connection streams",
                ROUND_TRIP_LIMIT_ASYNC,
                "asyncio",
            ),
            _RowLabels(
                f"asyncio bulk read(65536), {size_label}",
                asyncio_streams,
                "asyncio.open_connection streams",
                BULK_LIMIT_ASYNC,
                "asyncio",
            ),
        ),
    ]
    for client, round_trip_row, bulk_row in groups:
        round_trips, transfers_ = _in_fresh_process(client, args)
        per_trip = _monitored_median(round_trips) / trips
        _row(
            report,
            round_trip_row,
            round_trips,
            value=per_trip * 1e6,
            unit="µs CPU per round trip",
            detail=f"{per_trip * 1e6:.1f} µs CPU per round trip, {blocks} pairs of {trips}",
        )
        cpu = _monitored_median(transfers_)
        _row(
            report,
            bulk_row,
            transfers_,
            value=cpu * 1e3,
            unit=f"ms CPU per {size_label}",
            detail=f"{cpu * 1e3:.1f} ms CPU per transfer, {transfers} pairs",
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--round-trips", type=positive_int, default=2000, help="round trips per block"
    )
    parser.add_argument(
        "--blocks", type=positive_int, default=10, help="pairs of round-trip blocks per run"
    )
    parser.add_argument("--bulk-mib", type=positive_int, default=256, help="MiB per transfer")
    parser.add_argument(
        "--transfers", type=positive_int, default=6, help="pairs of bulk transfers per run"
    )
    add_run_arguments(parser, runs=1, quick_help="a smoke run: small counts, checks the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.round_trips, args.blocks, args.bulk_mib, args.transfers = 200, 2, 8, 2
    report = Report("datapath")
    print(f"client {pin_cpu(-1)} (and the processes it starts), peer on the first CPU")
    peer = Peer()
    started = time.monotonic()
    try:
        for run in range(args.runs):
            report.runs = run + 1
            print(
                f"== run {run + 1}/{args.runs}: {args.blocks} pairs of {args.round_trips} "
                f"round trips, {args.transfers} pairs of {args.bulk_mib} MiB transfers",
                flush=True,
            )
            _measure(
                report,
                peer.address,
                trips=args.round_trips,
                blocks=args.blocks,
                bulk=args.bulk_mib * MiB,
                transfers=args.transfers,
            )
    finally:
        peer.close()
    finish(report, started, args.json)


if __name__ == "__main__":
    main()
