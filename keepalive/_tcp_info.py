"""Linux ``struct tcp_info``: the one definition of the fields this package reads.

``struct tcp_info`` (include/uapi/linux/tcp.h) starts with eight one-byte fields
(``tcpi_state``, ``tcpi_ca_state``, ``tcpi_retransmits``, ``tcpi_probes``, ``tcpi_backoff``,
``tcpi_options``, the two window-scale nibbles, two bit fields), then ``__u32`` fields:
rto, ato, snd_mss, rcv_mss, unacked, sacked, lost, retrans, fackets, ``tcpi_last_data_sent``
(offset 44), ``tcpi_last_ack_sent``, ``tcpi_last_data_recv`` (52), ``tcpi_last_ack_recv`` (56),
all in milliseconds. Both ``getsockopt(IPPROTO_TCP, TCP_INFO)`` and sock_diag's
``INET_DIAG_INFO`` attribute carry it.

Other kernels lay their ``tcp_info`` out differently (FreeBSD's has the same name, another
layout, and ``socket.TCP_INFO`` exists there too), so nothing is parsed anywhere but on Linux:
:func:`applies` is the only ``sys.platform`` check for it.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass
from typing import Literal

__all__ = ["MIN_SIZE", "READ_SIZE", "TCP_ESTABLISHED", "TcpInfo", "applies", "parse", "read"]

_STATE = 0
_PROBES = 3
_LAST_DATA_SENT = 44
_LAST_DATA_RECV = 52
_LAST_ACK_RECV = 56
#: Bytes needed for every field read here (through tcpi_last_ack_recv).
MIN_SIZE = _LAST_ACK_RECV + 4
#: Bytes asked of getsockopt: the Linux 2.6 struct (104), which every later kernel extends.
READ_SIZE = 104
#: include/net/tcp_states.h
TCP_ESTABLISHED = 1


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """The ``tcp_info`` fields this package uses; times in seconds since the event."""

    state: int
    probes: int
    last_data_sent: float
    last_data_recv: float
    last_ack_recv: float

    @property
    def established(self) -> bool:
        return self.state == TCP_ESTABLISHED


def applies(platform: str | None = None) -> bool:
    """Whether this layout is the running kernel's (``platform`` defaults to ``sys.platform``)."""
    name = sys.platform if platform is None else platform
    return name.startswith(("linux", "android"))


def parse(raw: bytes, byteorder: Literal["little", "big"] | None = None) -> TcpInfo | None:
    """The fields of a Linux ``tcp_info`` blob; None off Linux or when ``raw`` is too short.

    ``byteorder`` is the kernel's (the host's by default; recorded samples may give theirs).
    """
    if not applies() or len(raw) < MIN_SIZE:
        return None
    order = "<" if (byteorder or sys.byteorder) == "little" else ">"
    sent, recv, ack = (
        struct.unpack_from(order + "I", raw, offset)[0]
        for offset in (_LAST_DATA_SENT, _LAST_DATA_RECV, _LAST_ACK_RECV)
    )
    return TcpInfo(raw[_STATE], raw[_PROBES], sent / 1000, recv / 1000, ack / 1000)


def read(sock: socket.socket) -> TcpInfo | None:
    """``getsockopt(IPPROTO_TCP, TCP_INFO)`` parsed; None where the layout is not Linux's."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None or not applies():
        return None
    return parse(sock.getsockopt(socket.IPPROTO_TCP, option, READ_SIZE))
