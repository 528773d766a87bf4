"""What a heartbeat costs: keepalive's drivers against the usual hand-written pattern.

asyncio: N monitored connections (default 10,000) at a 1 s ping interval for D seconds,
against a baseline of one task per connection that sleeps, writes a ping and awaits the
pong line. Blocking sockets: keepalive.sync.monitor on M sockets (default 1,000) against one
thread per socket doing the same. Printed: CPU seconds of the client process per 1,000
heartbeats (pongs received), memory per monitored connection, and the ratios.

The responders (PING -> PONG) run in a child process, so their CPU stays out of the client's
figure and each process stays under the per-process open-file limit. CPU is the client
process's own (``time.process_time``), measured over the same wall-clock window for both.

Goals (issue #3): at most one third of the baseline's CPU, at most 1 KiB per monitor.

    python benchmarks/heartbeat.py [--connections 10000] [--sockets 1000] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import multiprocessing
import os
import resource
import selectors
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from keepalive import aio, sync
from keepalive.heartbeat import HeartbeatConfig

PING, PONG = b"PING\n", b"PONG\n"
BEAT = HeartbeatConfig(interval=1.0, timeout=10.0)


# -- the responder process -------------------------------------------------------------------


def _responder(listener: socket.socket, ready: multiprocessing.synchronize.Event) -> None:
    """Answer every PING line with PONG on every accepted connection, until killed."""
    _raise_nofile()
    selector = selectors.DefaultSelector()
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ)
    ready.set()
    pending: dict[socket.socket, bytes] = {}
    while True:
        for key, _mask in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    selector.register(conn, selectors.EVENT_READ)
                    pending[conn] = b""
                continue
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                selector.unregister(sock)
                pending.pop(sock, None)
                sock.close()
                continue
            buffered = pending[sock] + data
            lines = buffered.count(b"\n")
            pending[sock] = buffered[buffered.rfind(b"\n") + 1 :]
            if lines:
                sock.send(PONG * lines)


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Responders:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        ready = multiprocessing.get_context("fork").Event()
        self.process = multiprocessing.get_context("fork").Process(
            target=_responder, args=(self.listener, ready), daemon=True
        )
        self.process.start()
        ready.wait(10)
        self.address = self.listener.getsockname()

    def close(self) -> None:
        self.process.kill()
        self.process.join()
        self.listener.close()


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    beats: int
    cpu: float
    bytes_per_connection: float

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu / max(1, self.beats) * 1000


def _report(ours: Result, baseline: Result) -> None:
    for result in (baseline, ours):
        print(
            f"  {result.label:<34} {result.beats:>8} beats  "
            f"{result.cpu_per_1000:7.4f} CPU-s/1000  {result.bytes_per_connection:8.0f} B/conn"
        )
    cpu_ratio = ours.cpu_per_1000 / baseline.cpu_per_1000
    mem_ratio = ours.bytes_per_connection / baseline.bytes_per_connection
    print(f"  CPU ratio (ours / baseline)   : {cpu_ratio:.2f}x (goal <= 0.33x)")
    print(
        f"  memory ratio (ours / baseline): {mem_ratio:.2f}x; ours {ours.bytes_per_connection:.0f}"
        " B per monitor (goal <= 1024 B)"
    )


def _traced(make: Callable[[], object]) -> tuple[object, int]:
    """Run ``make`` and return what it built and the bytes it left allocated."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    built = make()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return built, after - before


# -- asyncio -----------------------------------------------------------------------------------


async def _open_many(
    address: tuple[str, int], count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    streams = []
    for start in range(0, count, 500):
        batch = [asyncio.open_connection(*address) for _ in range(min(500, count - start))]
        streams.extend(await asyncio.gather(*batch))
    return streams


async def _bench_aio(
    address: tuple[str, int], count: int, duration: float
) -> tuple[Result, Result]:
    streams = await _open_many(address, count)
    beats = [0]

    async def hand_written(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(BEAT.interval)
            writer.write(PING)
            await reader.readline()
            beats[0] += 1

    # Memory of the pattern itself: tasks and their coroutine frames, once they are running.
    gc.collect()
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    tasks = [asyncio.ensure_future(hand_written(r, w)) for r, w in streams]
    await asyncio.sleep(0.2)  # every task has started and sleeps in its loop
    gc.collect()
    task_bytes = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    await asyncio.sleep(BEAT.interval + 0.3)
    beats[0] = 0
    cpu = time.process_time()
    await asyncio.sleep(duration)
    baseline = Result(
        "one task per connection", beats[0], time.process_time() - cpu, task_bytes / count
    )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    def start_monitors() -> list[aio.HeartbeatProtocol]:
        monitors = []
        for reader, writer in streams:
            aio.monitor_streams(reader, writer, heartbeat=BEAT, ping=PING, pong=PONG)
            monitor = aio.monitor_of(writer)
            assert monitor is not None
            monitors.append(monitor)
        return monitors

    monitors, monitor_bytes = _traced(start_monitors)
    await asyncio.sleep(BEAT.interval + 0.5)
    received = sum(m.pongs_received for m in monitors)  # type: ignore[attr-defined]
    cpu = time.process_time()
    await asyncio.sleep(duration)
    cpu = time.process_time() - cpu
    received = sum(m.pongs_received for m in monitors) - received  # type: ignore[attr-defined]
    ours = Result("keepalive.aio (one timer per loop)", received, cpu, monitor_bytes / count)
    for _reader, writer in streams:
        writer.close()
    return ours, baseline


# -- blocking sockets --------------------------------------------------------------------------


def _bench_sync(address: tuple[str, int], count: int, duration: float) -> tuple[Result, Result]:
    """Both sides keep the application's usual reader thread per socket (blocked in recv);
    the baseline adds the usual heartbeat thread per socket, ours one scheduler thread.

    The baseline's readers count pongs each in its own slot: a lock shared by a thousand
    readers would charge the baseline for contention the pattern does not have. Our memory
    is measured when the monitors are made and again once every socket has pinged and its
    reader waits (tracemalloc, allocations made in keepalive code): what a monitor holds
    for good, plus what each recv() blocked in the wrapper holds while it waits.
    """
    stop = threading.Event()
    pongs = [0] * count

    def reader(sock: socket.socket | sync.MonitoredSocket, slot: int | None) -> None:
        try:
            while data := sock.recv(4096):
                if slot is not None:
                    pongs[slot] += data.count(PONG)
        except OSError:
            pass

    def pinger(sock: socket.socket) -> None:
        while not stop.wait(BEAT.interval):
            sock.sendall(PING)

    def start(
        targets: list[tuple[Callable[..., None], tuple[object, ...]]],
    ) -> list[threading.Thread]:
        threads = [threading.Thread(target=t, args=a, daemon=True) for t, a in targets]
        for thread in threads:
            thread.start()
        return threads

    socks = [socket.create_connection(address) for _ in range(count)]
    readers = start([(reader, (s, slot)) for slot, s in enumerate(socks)])
    # Threads cost mostly stack pages, which tracemalloc does not see: count resident memory.
    rss_before = _rss()
    pingers = start([(pinger, (s,)) for s in socks])
    time.sleep(0.3)
    rss_threads = _rss() - rss_before
    time.sleep(BEAT.interval)
    received = sum(pongs)
    cpu = time.process_time()
    time.sleep(duration)
    cpu = time.process_time() - cpu
    received = sum(pongs) - received
    baseline = Result("heartbeat thread per socket (RSS)", received, cpu, rss_threads / count)
    stop.set()
    for sock in socks:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    for thread in readers + pingers:
        thread.join()

    socks = [socket.create_connection(address) for _ in range(count)]
    gc.collect()
    tracemalloc.start(16)
    traced_before = tracemalloc.get_traced_memory()[0]
    monitored = [sync.monitor(s, heartbeat=BEAT, ping=PING, pong=PONG) for s in socks]
    gc.collect()
    created_bytes = tracemalloc.get_traced_memory()[0] - traced_before
    readers = start([(reader, (m, None)) for m in monitored])
    time.sleep(BEAT.interval + 0.5)  # every socket has pinged, read its pong and waits again
    snapshot = tracemalloc.take_snapshot()  # looked at after the CPU window: no stall before it
    tracemalloc.stop()
    time.sleep(0.5)
    received = sum(m.stats.pongs_received for m in monitored)
    cpu = time.process_time()
    time.sleep(duration)
    cpu = time.process_time() - cpu
    received = sum(m.stats.pongs_received for m in monitored) - received
    ours = Result("keepalive.sync, one thread (traced)", received, cpu, created_bytes / count)
    held, waiting = _steady_bytes(snapshot)
    print(
        f"  keepalive.sync memory once running: {held / count:.0f} B per monitor, "
        f"and {waiting / count:.0f} B per recv() blocked in it"
    )
    for monitor in monitored:
        monitor.shutdown(socket.SHUT_RDWR)
        monitor.close()
    for thread in readers:
        thread.join()
    return ours, baseline


def _steady_bytes(snapshot: tracemalloc.Snapshot) -> tuple[int, int]:
    """Bytes allocated in keepalive code and still alive: (held by monitors, held by recv
    calls waiting in MonitoredSocket._wait)."""
    package = os.path.dirname(sync.__file__) + os.sep
    lines, first = inspect.getsourcelines(sync.MonitoredSocket._wait)
    wait_lines = range(first, first + len(lines))
    held = waiting = 0
    for trace in snapshot.traces:
        frames = [frame for frame in trace.traceback if frame.filename.startswith(package)]
        if not frames:
            continue
        if any(f.filename == sync.__file__ and f.lineno in wait_lines for f in frames):
            waiting += trace.size
        else:
            held += trace.size
    return held, waiting


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--sockets", type=int, default=1_000)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    _raise_nofile()
    responders = Responders()
    try:
        print(
            f"asyncio: {args.connections} connections, ping every {BEAT.interval:g} s, "
            f"{args.duration:g} s measured"
        )
        ours, baseline = asyncio.run(
            _bench_aio(responders.address, args.connections, args.duration)
        )
        _report(ours, baseline)
        print(
            f"\nblocking sockets, a reader thread each: {args.sockets} sockets, "
            f"ping every {BEAT.interval:g} s, {args.duration:g} s measured"
        )
        ours, baseline = _bench_sync(responders.address, args.sockets, args.duration)
        _report(ours, baseline)
    finally:
        responders.close()


if __name__ == "__main__":
    main()
