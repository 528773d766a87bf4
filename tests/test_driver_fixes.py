"""Regression tests for heartbeat-driver bugs found by an adversarial pass over the public API."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time

import pytest

from keepalive.errors import InvalidSetting, PeerUnresponsive
from keepalive.heartbeat import MAX_SECONDS, HeartbeatConfig
from keepalive.sync import active_monitors, monitor


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


# ---------------------------------------------------------------------------------------------
# A huge interval must not silence every heartbeat in the process


@pytest.mark.parametrize("field", ["interval", "timeout"])
@pytest.mark.parametrize("value", [1e10, 1e308, MAX_SECONDS * 2])
def test_seconds_beyond_a_year_are_refused_up_front(field: str, value: float) -> None:
    kwargs = {"interval": 1.0, "timeout": 1.0, field: value}
    with pytest.raises(InvalidSetting) as caught:
        HeartbeatConfig(**kwargs)
    assert caught.value.field == field
    assert "a year" in str(caught.value)


def test_the_longest_interval_leaves_the_scheduler_serving_the_others() -> None:
    longest = HeartbeatConfig(interval=MAX_SECONDS, timeout=MAX_SECONDS)
    quick = HeartbeatConfig(interval=0.05, timeout=0.5)
    idle_client, idle_server = tcp_pair()
    client, server = tcp_pair()
    with idle_server, server:
        sleeper = monitor(idle_client, heartbeat=longest)
        busy = monitor(client, heartbeat=quick)
        with sleeper, busy:
            time.sleep(0.5)
            server.settimeout(2)
            assert server.recv(100).startswith(b"PING\n")  # the scheduler still pings
            assert sleeper.monitoring
            assert busy.monitoring
            assert active_monitors() >= 2
            names = {thread.name for thread in threading.enumerate()}
            assert "keepalive-heartbeat" in names


def test_a_refused_heartbeat_leaves_the_socket_blocking_and_untouched() -> None:
    client, server = tcp_pair()
    with client, server:
        client.settimeout(7.0)
        with pytest.raises(InvalidSetting):
            monitor(client, heartbeat=HeartbeatConfig(interval=1e308, timeout=1))
        assert client.gettimeout() == 7.0


def test_asyncio_refuses_a_huge_interval_before_touching_the_streams() -> None:
    async def main() -> None:
        from keepalive import aio

        listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        protocol = writer.transport.get_protocol()
        with pytest.raises(InvalidSetting):
            aio.monitor_streams(
                reader, writer, heartbeat=HeartbeatConfig(interval=1e308, timeout=1)
            )
        assert writer.transport.get_protocol() is protocol
        writer.close()
        listener.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# Fork: a child's close() must not shut the parent's connection down


# Forking with the scheduler thread running is the point: 3.12+ warns about any fork of a
# multi-threaded process.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_childs_close_leaves_the_parents_connection_alone() -> None:
    client, server = tcp_pair()
    with server:
        sock = monitor(client, heartbeat=HeartbeatConfig(interval=30, timeout=30))
        sock.stop()  # a monitor no longer heartbeated (EOF, stop()): the scheduler forgot it
        assert not sock.monitoring
        sock.settimeout(5)
        blocked = threading.Thread(target=lambda: sock.recv(100), daemon=True)
        blocked.start()  # a call in flight in the parent when the child is forked
        time.sleep(0.1)
        pid = os.fork()
        if pid == 0:  # the child: close its copy, then leave at once
            try:
                sock.close()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        server.sendall(b"reply\n")
        blocked.join(5)
        assert not blocked.is_alive()
        # The parent's connection still works both ways, as a plain socket's would.
        server.sendall(b"second\n")
        assert sock.recv(100) == b"second\n"
        sock.sendall(b"back\n")
        server.settimeout(5)
        assert server.recv(100) == b"back\n"
        sock.close()


# ---------------------------------------------------------------------------------------------
# Bytes received before the verdict reach the application


def test_bytes_buffered_before_the_verdict_are_delivered_then_the_error() -> None:
    client, server = tcp_pair()
    beat = HeartbeatConfig(interval=0.1, timeout=0.2)
    with server:
        sock = monitor(client, heartbeat=beat)
        with sock:
            sock.settimeout(5)
            server.settimeout(5)
            assert server.recv(100) == b"PING\n"
            # The peer answers with data and the start of a pong, then goes silent.
            server.sendall(b"data one\ndata two\nPO")
            time.sleep(0.05)
            assert sock.recv(100) == b"data one\ndata two\n"  # "PO" may be a pong: held
            deadline = time.monotonic() + 5
            while not sock.dead:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert sock.recv(100) == b"PO"  # received before the verdict: delivered
            with pytest.raises(PeerUnresponsive):
                sock.recv(100)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))


@pytest.mark.parametrize(
    ("buffer", "nbytes"),
    [(bytearray(10), "x"), (bytearray(10), 2.5), (bytearray(10), True), (b"read-only", 0), (5, 0)],
)
def test_recv_into_refuses_bad_arguments_clearly(buffer: object, nbytes: object) -> None:
    client, server = tcp_pair()
    with server, monitor(client, heartbeat=HeartbeatConfig(30, 30)) as sock:
        with pytest.raises(InvalidSetting):
            sock.recv_into(buffer, nbytes)  # type: ignore[arg-type]
        server.sendall(b"ok")
        sock.settimeout(5)
        assert sock.recv(10) == b"ok"  # the socket is untouched


def test_the_supervisor_delivers_a_partial_pong_received_before_the_verdict() -> None:
    from keepalive.sync import Supervisor

    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(100)  # the ping
            conn.sendall(b"hello\nPO")  # data, the start of a pong, then silence
            done.wait(10)

    threading.Thread(target=serve, daemon=True).start()
    with listener, Supervisor(listener.getsockname(), heartbeat=HeartbeatConfig(0.2, 0.3)) as sup:
        conn = sup.wait_connected(5)
        conn.settimeout(5)
        received = b""
        error: BaseException | None = None
        while error is None:
            try:
                data = conn.recv(100)
            except PeerUnresponsive as exc:
                error = exc
            else:
                assert data
                received += data
        assert received == b"hello\nPO"
    done.set()
