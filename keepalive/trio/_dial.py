"""The library's one dial (:class:`keepalive.dial._Dialer`) made with trio's I/O: name
resolution, a socket with kernel keepalive set before the SYN, every address, each within
the connect timeout; the retry decisions stay the dialer's and the policy's."""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

import trio

from keepalive.dial import AttemptFailure, _AttemptError, _Dialer
from keepalive.reconnect import RetryState

if TYPE_CHECKING:
    from keepalive.reconnect import RetryPolicy


async def attempt(dialer: _Dialer, number: int) -> trio.SocketStream:
    """Attempt ``number``: a connected ``trio.SocketStream``, or :class:`_AttemptError` with
    a failure per address. Cancelling stops it at once (the socket is closed)."""
    try:
        infos = await trio.socket.getaddrinfo(dialer.host, dialer.port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise dialer.unresolved(number, exc) from None
    failures: list[AttemptFailure] = []
    for family, _kind, _proto, _name, sockaddr in infos:
        with dialer.trying(number, family, sockaddr, failures) as sock:
            sock.setblocking(False)
            trio_sock = trio.socket.from_stdlib_socket(sock)
            with trio.move_on_after(dialer.timeout) as scope:
                await trio_sock.connect(sockaddr)
            if scope.cancelled_caught:
                raise TimeoutError(errno.ETIMEDOUT, f"connect timed out after {dialer.timeout:g} s")
            return trio.SocketStream(trio_sock)
    raise dialer.failed(number, failures)


async def dial(dialer: _Dialer, retry: RetryPolicy | None) -> trio.SocketStream:
    """Attempts per ``retry`` (one without it), as :func:`keepalive.connect_async` makes them."""
    state = RetryState(retry, start=trio.current_time()) if retry is not None else None
    failures: list[AttemptFailure] = []
    number = 0
    while True:
        try:
            return await attempt(dialer, number)
        except _AttemptError as exc:
            failures.extend(exc.failures)
            delay = dialer.next_delay(state, failures, exc.last, trio.current_time())
        await trio.sleep(delay)
        number += 1
