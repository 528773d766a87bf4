"""Linux's ``struct tcp_info`` (``include/uapi/linux/tcp.h``): the one definition of its layout.

Read by the heartbeat drivers (is the receive window closed?), the demo and the audit
(``keepalive.diagnostics._linux`` re-exports these names). Other kernels lay their
``tcp_info`` out differently (FreeBSD's has the same name, and ``socket.TCP_INFO`` exists
there too), so :func:`tcp_info_applies` is the one ``sys.platform`` check for it.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass
from typing import Literal

ByteOrder = Literal["little", "big"]

# Eight one-byte fields (tcpi_state, tcpi_ca_state, tcpi_retransmits, tcpi_probes, tcpi_backoff,
# tcpi_options, the two window-scale nibbles, two bit fields), then __u32 fields: rto, ato,
# snd_mss, rcv_mss, unacked, sacked, lost, retrans, fackets, tcpi_last_data_sent (offset 44),
# tcpi_last_ack_sent, tcpi_last_data_recv (52), tcpi_last_ack_recv (56), in milliseconds.
# Much later (Linux 6.2, commit "tcp: add rcv_wnd and plb_rehash to tcp_info"): tcpi_snd_wnd
# (228), tcpi_rcv_wnd (232), the receive window we last advertised, in bytes.

_TCPI_STATE = 0
_TCPI_PROBES = 3
_TCPI_LAST_DATA_SENT = 44
_TCPI_LAST_DATA_RECV = 52
_TCPI_LAST_ACK_RECV = 56
_TCPI_RCV_WND = 232
#: Bytes needed for every field :class:`TcpInfo` reads (through tcpi_last_ack_recv).
TCP_INFO_MIN_SIZE = _TCPI_LAST_ACK_RECV + 4
#: Bytes asked of getsockopt: the Linux 2.6 struct (104), which every later kernel extends.
TCP_INFO_READ_SIZE = 104
_RCV_WND_SIZE = _TCPI_RCV_WND + 4
_U32 = struct.Struct("=I")
_TCP_ESTABLISHED = 1  # include/net/tcp_states.h
_OPTION: int | None = getattr(socket, "TCP_INFO", None)
_APPLIES = sys.platform.startswith(("linux", "android"))


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
        return self.state == _TCP_ESTABLISHED


def tcp_info_applies(platform: str | None = None) -> bool:
    """Whether this layout is the running kernel's (``platform`` defaults to ``sys.platform``)."""
    name = sys.platform if platform is None else platform
    return name.startswith(("linux", "android"))


def parse_tcp_info(raw: bytes, byteorder: ByteOrder | None = None) -> TcpInfo | None:
    """The fields of a Linux ``tcp_info`` blob; None off Linux or when ``raw`` is too short.

    ``byteorder`` is the kernel's (the host's by default; recorded samples may give theirs).
    """
    if not tcp_info_applies() or len(raw) < TCP_INFO_MIN_SIZE:
        return None
    order = "<" if (byteorder or sys.byteorder) == "little" else ">"
    sent, recv, ack = (
        struct.unpack_from(order + "I", raw, offset)[0]
        for offset in (_TCPI_LAST_DATA_SENT, _TCPI_LAST_DATA_RECV, _TCPI_LAST_ACK_RECV)
    )
    return TcpInfo(raw[_TCPI_STATE], raw[_TCPI_PROBES], sent / 1000, recv / 1000, ack / 1000)


def read_tcp_info(sock: socket.socket) -> TcpInfo | None:
    """``getsockopt(IPPROTO_TCP, TCP_INFO)`` parsed; None where the layout is not Linux's."""
    if _OPTION is None or not tcp_info_applies():
        return None
    return parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, _OPTION, TCP_INFO_READ_SIZE))


def receive_window(sock: socket.socket) -> int | None:
    """The receive window the socket last advertised, in bytes (``tcpi_rcv_wnd``); None where
    the kernel does not report it (not Linux, or Linux before 6.2) or the read fails."""
    if _OPTION is None or not _APPLIES:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _OPTION, _RCV_WND_SIZE)
    except OSError:
        return None
    if len(raw) < _RCV_WND_SIZE:
        return None
    window: int = _U32.unpack_from(raw, _TCPI_RCV_WND)[0]
    return window
