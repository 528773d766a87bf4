"""The trio contenders of benchmarks/heartbeat.py: keepalive.trio against a bare-I/O floor.

``measure(kind, connections, interval, duration, address)`` opens ``connections`` TCP
connections to ``address`` (a responder answering each ``PING`` line with ``PONG``), waits
until all are connected and beating, then measures for ``duration`` seconds and returns
``{"cpu_s": process CPU seconds in the window, "beats": pongs received in the window}``.

* ``"floor"``: what any heartbeat must at least do in trio, with no logic: one task pings
  every connection each ``interval`` (``send_all(b"PING\\n")``), one bare reader task per
  connection counts the ``PONG`` lines (trio streams have no callbacks: a read needs a task).
* ``"keepalive"``: :func:`keepalive.trio.open_connection` with
  ``HeartbeatConfig(interval, timeout=interval)``: the library's one scheduler task pings,
  one reader task per connection reads (the pongs are removed inside ``receive_some``, which
  returns nothing to it), and the beats are the monitors' ``pongs_received``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from keepalive.errors import PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.trio import MonitoredStream, open_connection

KINDS = ("floor", "keepalive")


def measure(
    kind: str, connections: int, interval: float, duration: float, address: tuple[str, int]
) -> dict[str, float]:
    """CPU seconds and beats of ``kind`` over a ``duration``-second window (see the module)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    if connections < 1 or interval <= 0 or duration <= 0:
        raise ValueError(
            f"connections={connections}, interval={interval}, duration={duration}: "
            "expected connections >= 1 and positive seconds"
        )
    result: dict[str, float] = trio.run(_measure, kind, connections, interval, duration, address)
    return result


async def _measure(
    kind: str, connections: int, interval: float, duration: float, address: tuple[str, int]
) -> dict[str, float]:
    host, port = address
    streams: list[trio.abc.Stream]
    beats: Callable[[], int]
    async with trio.open_nursery() as nursery:
        if kind == "floor":
            plain = [await trio.open_tcp_stream(host, port) for _ in range(connections)]
            streams = list(plain)
            counted = [0]
            for tcp in plain:
                nursery.start_soon(_count_pongs, tcp, counted)
            nursery.start_soon(_ping_all, plain, interval)

            def beats() -> int:
                return counted[0]
        else:
            config = HeartbeatConfig(interval, timeout=interval)
            monitored = [
                await open_connection(host, port, heartbeat=config) for _ in range(connections)
            ]
            streams = list(monitored)
            for monitor in monitored:
                nursery.start_soon(_drain, monitor)

            def beats() -> int:
                return sum(monitor.pongs_received for monitor in monitored)

        await trio.sleep(2 * interval)  # every connection has beaten at least once
        cpu_start, beats_start = time.process_time(), beats()
        await trio.sleep(duration)
        cpu_end, beats_end = time.process_time(), beats()
        nursery.cancel_scope.cancel()
    for stream in streams:
        await trio.aclose_forcefully(stream)
    return {"cpu_s": cpu_end - cpu_start, "beats": float(beats_end - beats_start)}


async def _ping_all(streams: list[trio.SocketStream], interval: float) -> None:
    deadline = trio.current_time()
    while True:
        for stream in streams:
            await stream.send_all(b"PING\n")
        deadline += interval
        await trio.sleep_until(deadline)


async def _count_pongs(stream: trio.SocketStream, counted: list[int]) -> None:
    while data := await stream.receive_some():
        counted[0] += data.count(b"\n")  # the responder sends nothing but PONG lines


async def _drain(stream: MonitoredStream) -> None:
    try:
        while await stream.receive_some():
            pass  # the responder sends only pongs: receive_some returns only at the end
    except (PeerUnresponsive, trio.BrokenResourceError, trio.ClosedResourceError):
        return  # an overloaded responder: this connection stops beating, the others go on
