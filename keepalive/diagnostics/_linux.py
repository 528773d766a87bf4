"""The Linux kernel's views of TCP sockets: the one definition of each layout read here.

* ``/proc/net/tcp`` and ``/proc/net/tcp6`` rows, ``/proc/net/route`` and
  ``/proc/net/ipv6_route`` (text in the kernel's own hex encodings);
* NETLINK_SOCK_DIAG dumps (``linux/sock_diag.h``, ``linux/inet_diag.h``);
* ``struct tcp_info`` (``include/uapi/linux/tcp.h``), carried both by
  ``getsockopt(IPPROTO_TCP, TCP_INFO)`` and by sock_diag's ``INET_DIAG_INFO`` attribute:
  defined once in :mod:`keepalive._tcp_info` (the heartbeat reads it too);
* the per-process tables the audit needs (``/proc/PID/fd``, network namespaces).

The parsers are pure: they take text or bytes (and the byte order of the machine that
produced them, so recorded samples parse anywhere) and return plain values. The readers
below them do the I/O and are called on Linux only.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from keepalive._tcp_info import (
    parse_tcp_info,
)

ByteOrder = Literal["little", "big"]
Family = Literal["ipv4", "ipv6"]

HOST_BYTEORDER: ByteOrder = "little" if sys.byteorder == "little" else "big"

# include/net/tcp_states.h
TCP_STATES: Mapping[int, str] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
    13: "BOUND_INACTIVE",
}
_TCP_ESTABLISHED = 1

# The `tr` column of /proc/net/tcp (net/ipv4/tcp_ipv4.c get_tcp4_sock) and idiag_timer
# (net/ipv4/inet_diag.c inet_sk_diag_fill) use the same codes.
TCP_TIMERS: Mapping[int, str] = {
    0: "none",
    1: "retransmit",
    2: "keepalive",
    3: "time-wait",
    4: "zero-window-probe",
}


@dataclass(frozen=True)
class KernelSocket:
    """One TCP socket as the kernel reports it (a /proc/net/tcp row or a sock_diag message).

    ``timer`` is a :data:`TCP_TIMERS` name (``"unknown(N)"`` for other codes) and
    ``timer_seconds`` the time until it fires (None when no timer runs). ``probes_out`` counts
    unanswered keepalive or zero-window probes. The ``last_*`` fields (seconds since the last
    data sent, data received and ACK received) come from sock_diag's tcp_info only.
    """

    family: Family
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    state: str
    timer: str
    timer_seconds: float | None
    send_queue: int
    receive_queue: int
    retransmits: int
    probes_out: int | None
    uid: int
    inode: int
    source: Literal["proc", "sock_diag"]
    last_data_sent: float | None = None
    last_data_received: float | None = None
    last_ack_received: float | None = None


# --- /proc/net/tcp -------------------------------------------------------------------------------


def _decode_proc_address(text: str, byteorder: ByteOrder) -> str:
    """``/proc/net/tcp`` prints each 32-bit word of the address (network byte order in memory)
    as a native integer with ``%08X``: undo that per word."""
    if len(text) not in (8, 32) or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"not a /proc/net/tcp address: {text!r}")
    raw = b"".join(int(text[i : i + 8], 16).to_bytes(4, byteorder) for i in range(0, len(text), 8))
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    return _format_ipv6(raw)


def _format_ipv6(raw: bytes) -> str:
    """IPv6 text; IPv4-mapped addresses always as ``::ffff:a.b.c.d`` (Python < 3.13 would
    print ``::ffff:7f00:1``)."""
    address = ipaddress.IPv6Address(raw)
    mapped = address.ipv4_mapped
    return f"::ffff:{mapped}" if mapped is not None else str(address)


def parse_proc_net_tcp(
    text: str,
    *,
    byteorder: ByteOrder = HOST_BYTEORDER,
    ticks_per_second: int = 100,
) -> list[KernelSocket]:
    """Parse ``/proc/net/tcp`` or ``/proc/net/tcp6`` text.

    ``byteorder`` is that of the machine that produced the text (addresses are printed as
    native words); ``ticks_per_second`` is its USER_HZ (``tm->when`` is in clock ticks; 100 on
    every mainstream Linux). Raises ValueError naming the line for a malformed row.
    """
    sockets: list[KernelSocket] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] == "sl":
            continue
        try:
            sockets.append(_parse_proc_row(fields, byteorder, ticks_per_second))
        except (ValueError, IndexError) as error:
            raise ValueError(f"line {number} of /proc/net/tcp text is malformed: {line!r}") from (
                error
            )
    return sockets


def _parse_proc_row(fields: list[str], byteorder: ByteOrder, ticks: int) -> KernelSocket:
    if not fields[0].endswith(":") or len(fields) < 10:
        raise ValueError("too few fields")
    local, remote = fields[1].split(":"), fields[2].split(":")
    state_code = int(fields[3], 16)
    tx_queue, rx_queue = (int(part, 16) for part in fields[4].split(":"))
    timer_code_text, when_text = fields[5].split(":")
    timer_code = int(timer_code_text, 16)
    when = int(when_text, 16)
    local_address = _decode_proc_address(local[0], byteorder)
    family: Family = "ipv4" if len(local[0]) == 8 else "ipv6"
    timer = TCP_TIMERS.get(timer_code, f"unknown({timer_code})")
    return KernelSocket(
        family=family,
        local_address=local_address,
        local_port=int(local[1], 16),
        remote_address=_decode_proc_address(remote[0], byteorder),
        remote_port=int(remote[1], 16),
        state=TCP_STATES.get(state_code, f"UNKNOWN({state_code})"),
        timer=timer,
        timer_seconds=None if timer_code == 0 else when / ticks,
        send_queue=tx_queue,
        receive_queue=rx_queue,
        retransmits=int(fields[6], 16),
        # The "timeout" column is icsk_probes_out for full sockets (0 for time-wait rows).
        probes_out=int(fields[8]),
        uid=int(fields[7]),
        inode=int(fields[9]),
        source="proc",
    )


# --- /proc/net/route and /proc/net/ipv6_route ----------------------------------------------------

_RTF_GATEWAY = 0x0002  # linux/route.h


def parse_proc_net_route(text: str, *, byteorder: ByteOrder = HOST_BYTEORDER) -> tuple[str, ...]:
    """IPv4 default gateways from ``/proc/net/route`` text (hex fields in host byte order)."""
    gateways: list[str] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        destination, gateway, flags = fields[1], fields[2], int(fields[3], 16)
        if int(destination, 16) == 0 and flags & _RTF_GATEWAY:
            address = str(ipaddress.IPv4Address(int(gateway, 16).to_bytes(4, byteorder)))
            if address not in gateways:
                gateways.append(address)
    return tuple(gateways)


def parse_proc_net_ipv6_route(text: str) -> tuple[str, ...]:
    """IPv6 default-route next hops from ``/proc/net/ipv6_route`` (addresses in network order)."""
    gateways: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        destination, prefix_length, next_hop = fields[0], fields[1], fields[4]
        if int(destination, 16) == 0 and int(prefix_length, 16) == 0 and int(next_hop, 16):
            address = str(ipaddress.IPv6Address(bytes.fromhex(next_hop)))
            if address not in gateways:
                gateways.append(address)
    return tuple(gateways)


# --- NETLINK_SOCK_DIAG (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h) -------------------

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_INET_DIAG_INFO = 2
_NLMSG_HEADER = "IHHII"  # len, type, flags, seq, pid
_INET_DIAG_MSG_SIZE = 72  # 4 bytes + inet_diag_sockid (48) + expires, rqueue, wqueue, uid, inode
_ALL_TCP_STATES = 0xFFFFFFFF


def _prefix(byteorder: ByteOrder) -> str:
    return "<" if byteorder == "little" else ">"


def build_inet_diag_request(
    family: int, *, sequence: int = 1, byteorder: ByteOrder = HOST_BYTEORDER
) -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump request for all TCP sockets of ``family`` (AF_INET or
    AF_INET6), asking for tcp_info (INET_DIAG_INFO) too."""
    order = _prefix(byteorder)
    request = struct.pack(
        order + "BBBBI", family, socket.IPPROTO_TCP, 1 << (_INET_DIAG_INFO - 1), 0, _ALL_TCP_STATES
    ) + bytes(48)  # inet_diag_sockid: zero = no filter
    header = struct.pack(
        order + _NLMSG_HEADER,
        16 + len(request),
        _SOCK_DIAG_BY_FAMILY,
        _NLM_F_REQUEST | _NLM_F_DUMP,
        sequence,
        0,
    )
    return header + request


def parse_inet_diag_dump(
    data: bytes, *, byteorder: ByteOrder = HOST_BYTEORDER
) -> tuple[list[KernelSocket], bool]:
    """Parse netlink messages of a sock_diag TCP dump: the sockets found, and whether
    NLMSG_DONE ended the dump. Raises OSError for an NLMSG_ERROR reply and ValueError for a
    truncated message."""
    order = _prefix(byteorder)
    sockets: list[KernelSocket] = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _flags, _seq, _pid = struct.unpack_from(order + _NLMSG_HEADER, data, offset)
        if length < 16 or offset + length > len(data):
            raise ValueError(f"truncated netlink message at offset {offset}")
        body = data[offset + 16 : offset + length]
        if kind == _NLMSG_DONE:
            return sockets, True
        if kind == _NLMSG_ERROR:
            (code,) = struct.unpack_from(order + "i", body, 0)
            if code == 0:  # an ACK, not an error
                offset += (length + 3) & ~3
                continue
            raise OSError(-code, f"sock_diag dump failed: {os.strerror(-code)}")
        if kind == _SOCK_DIAG_BY_FAMILY:
            sockets.append(_parse_inet_diag_msg(body, byteorder))
        offset += (length + 3) & ~3
    return sockets, False


def _parse_inet_diag_msg(body: bytes, byteorder: ByteOrder) -> KernelSocket:
    order = _prefix(byteorder)
    if len(body) < _INET_DIAG_MSG_SIZE:
        raise ValueError("truncated inet_diag_msg")
    family, state_code, timer_code, retrans = struct.unpack_from("BBBB", body, 0)
    source_port, destination_port = struct.unpack_from(">HH", body, 4)  # network order
    expires_ms, rqueue, wqueue, uid, inode = struct.unpack_from(order + "IIIII", body, 52)
    if family == socket.AF_INET:
        local = str(ipaddress.IPv4Address(body[8:12]))
        remote = str(ipaddress.IPv4Address(body[24:28]))
        family_name: Family = "ipv4"
    else:
        local = _format_ipv6(body[8:24])
        remote = _format_ipv6(body[24:40])
        family_name = "ipv6"
    raw_info = _netlink_attribute(body, _INET_DIAG_MSG_SIZE, _INET_DIAG_INFO, order)
    info = None if raw_info is None else parse_tcp_info(raw_info, byteorder)
    last: list[float | None] = [None, None, None]
    if info is not None:
        last = [info.last_data_sent, info.last_data_recv, info.last_ack_recv]
    timer = TCP_TIMERS.get(timer_code, f"unknown({timer_code})")
    return KernelSocket(
        family=family_name,
        local_address=local,
        local_port=source_port,
        remote_address=remote,
        remote_port=destination_port,
        state=TCP_STATES.get(state_code, f"UNKNOWN({state_code})"),
        timer=timer,
        timer_seconds=None if timer_code == 0 else expires_ms / 1000,
        send_queue=wqueue,
        receive_queue=rqueue,
        # idiag_retrans holds icsk_retransmits for timer 1 and icsk_probes_out for 2 and 4.
        retransmits=retrans if timer_code == 1 else 0,
        probes_out=retrans if timer_code in (2, 4) else (0 if timer_code == 0 else None),
        uid=uid,
        inode=inode,
        source="sock_diag",
        last_data_sent=last[0],
        last_data_received=last[1],
        last_ack_received=last[2],
    )


def _netlink_attribute(body: bytes, offset: int, wanted: int, order: str) -> bytes | None:
    while offset + 4 <= len(body):
        length, kind = struct.unpack_from(order + "HH", body, offset)
        if length < 4:
            return None
        if kind == wanted:
            return body[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return None


# --- readers (I/O, Linux only) -------------------------------------------------------------------


def has_proc_net() -> bool:
    """Whether this kernel offers ``/proc/net/tcp`` and per-process fd tables."""
    return os.path.exists("/proc/net/tcp") and os.path.isdir("/proc/self/fd")


def sock_diag_dump(family: int) -> list[KernelSocket]:
    """All TCP sockets of ``family`` in this network namespace, via NETLINK_SOCK_DIAG."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as channel:
        channel.settimeout(5.0)
        channel.bind((0, 0))
        channel.sendto(build_inet_diag_request(family), (0, 0))
        sockets: list[KernelSocket] = []
        while True:
            data, _ancillary, flags, _address = channel.recvmsg(1 << 17)
            if flags & socket.MSG_TRUNC:
                raise OSError(errno.EMSGSIZE, "sock_diag reply truncated")
            found, done = parse_inet_diag_dump(data)
            sockets.extend(found)
            if done or not data:
                return sockets


def read_proc_net_tcp(directory: str, ticks: int) -> list[KernelSocket]:
    """The sockets of ``directory``/tcp and tcp6 (``/proc/self/net``, ``/proc/PID/net``)."""
    sockets: list[KernelSocket] = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{directory}/{name}", encoding="ascii") as handle:
                text = handle.read()
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        sockets.extend(parse_proc_net_tcp(text, ticks_per_second=ticks))
    return sockets


_SOCKET_LINK = re.compile(r"^socket:\[(\d+)\]$")


def socket_inodes(pid: int) -> dict[int, int]:
    """inode -> lowest fd of each socket ``pid`` holds (raises OSError when unreadable)."""
    inodes: dict[int, int] = {}
    directory = f"/proc/{pid}/fd"
    for entry in os.listdir(directory):
        try:
            target = os.readlink(f"{directory}/{entry}")
        except OSError:  # closed meanwhile
            continue
        match = _SOCKET_LINK.match(target)
        if match:
            inode, fd = int(match.group(1)), int(entry)
            if inode not in inodes or fd < inodes[inode]:
                inodes[inode] = fd
    return inodes


def net_namespace(pid: int | str) -> int | None:
    """The inode of ``pid``'s network namespace (``"self"`` for ours); None if unreadable."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def all_pids() -> list[int]:
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def clock_ticks() -> int:
    """USER_HZ, the unit of /proc/net/tcp's timers."""
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100
