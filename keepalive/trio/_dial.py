"""trio's I/O for the library's one dial (:class:`keepalive.dial._Dialer`): its shared
attempt and retry loops (``attempt_with``, ``dial_with``) make every decision; this only
resolves, connects within a timeout, reads the clock and sleeps, the trio way."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from keepalive.dial import _AddressInfo, _LoopIO


class _TrioIO:
    """``keepalive.dial._LoopIO`` for trio: a connect gives a connected ``trio.SocketStream``."""

    __slots__ = ()

    def now(self) -> float:
        return trio.current_time()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def resolve(self, host: str, port: int) -> Sequence[_AddressInfo]:
        return await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)

    async def connect(
        self, sock: socket.socket, sockaddr: Any, timeout: float
    ) -> trio.SocketStream | None:
        trio_sock = trio.socket.from_stdlib_socket(sock)
        with trio.move_on_after(timeout):
            await trio_sock.connect(sockaddr)
            return trio.SocketStream(trio_sock)
        return None  # (trio closed the socket when the timeout cancelled the connect)


TRIO_IO: _LoopIO[trio.SocketStream] = _TrioIO()
"""The dial's I/O on trio: ``dialer.attempt_with(TRIO_IO, n)``, ``dialer.dial_with(TRIO_IO,
retry)``."""
