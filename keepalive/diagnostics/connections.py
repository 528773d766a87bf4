"""The connection audit: every TCP connection of some processes, with its keepalive state as
the kernel shows it, and flags for the ones worth acting on.

:func:`audit` reads, on Linux, NETLINK_SOCK_DIAG (a local kernel query; ``/proc/net/tcp`` as
the fallback) and elsewhere psutil, with keepalive reported as ``"unknown"``. The rules are
pure: :func:`infer_keepalive` reads a socket's state and pending timer,
:func:`assess_connection` flags a connection.

How the keepalive state is read (Linux): the kernel has no field "SO_KEEPALIVE is on" in
either interface, but it reports the socket's pending timer (``tr`` in ``/proc/net/tcp``,
``idiag_timer`` in sock_diag). A retransmit (1) or zero-window-probe (4) timer takes
precedence in that report; otherwise 2 means the socket's ``sk_timer`` is pending, which for
an ESTABLISHED or CLOSE_WAIT socket is only ever the keepalive timer, and 0 means it is not
armed. So keepalive is ``"on"`` for timer 2, ``"off"`` for timer 0 and ``"unknown"`` for any
other timer or state (verified on loopback pairs with and without SO_KEEPALIVE; see
tests/samples/README.md).

Connection age: no kernel interface exposes when a connection was established. The socket
inode's times are zero, and the ctime of ``/proc/PID/fd/N`` is the moment that entry was
first looked up, not when the socket was made (both verified), so neither is used. What the
kernel does give (sock_diag's ``tcp_info``) is the time since the last data sent, data
received and ACK received; each of these is reset when the connection is established, so
their maximum is a true lower bound on the age (``min_age_seconds``), and their minimum is
how long the connection has been quiet (``idle_seconds``). Both are ``None`` where unknown.

psutil is imported inside the functions that need it, never at module import.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from keepalive._validate import positive_int, positive_seconds
from keepalive.diagnostics._linux import (
    Family,
    KernelSocket,
    all_pids,
    clock_ticks,
    has_proc_net,
    net_namespace,
    read_proc_net_tcp,
    sock_diag_dump,
    socket_inodes,
)
from keepalive.diagnostics._text import format_endpoint, format_number
from keepalive.diagnostics.middleboxes import DEFAULT_RISK_SECONDS

__all__ = [
    "AuditResult",
    "AuditSource",
    "ConnectionFlag",
    "ConnectionReport",
    "ObservedKeepalive",
    "SkippedProcess",
    "assess_connection",
    "audit",
    "audit_connections",
    "infer_keepalive",
]

#: Whether keepalive is armed on a connection, as far as the kernel shows it.
ObservedKeepalive = Literal["on", "off", "unknown"]
AuditSource = Literal["auto", "sock_diag", "proc", "psutil"]

# States in which a pending sk_timer can only be the keepalive timer (the FIN_WAIT2 timer of
# orphaned sockets shares it, and listeners do not arm it): there the timer is conclusive.
_KEEPALIVE_CONCLUSIVE_STATES = frozenset({"ESTABLISHED", "CLOSE_WAIT"})
# States reached only after the handshake, where tcp_info's last-event times all start at the
# moment of establishment (listeners report zeros; SYN_SENT has no such start).
_SYNCHRONIZED_STATES = frozenset(
    {"ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT1", "FIN_WAIT2", "CLOSING", "LAST_ACK"}
)


def infer_keepalive(state: str, timer: str) -> ObservedKeepalive:
    """The keepalive state a kernel socket's ``state`` and pending ``timer`` prove (pure).

    Conclusive only for ESTABLISHED and CLOSE_WAIT sockets with no retransmit or zero-window
    timer pending: ``"keepalive"`` -> ``"on"``, ``"none"`` -> ``"off"``; else ``"unknown"``.
    """
    if state not in _KEEPALIVE_CONCLUSIVE_STATES:
        return "unknown"
    if timer == "keepalive":
        return "on"
    if timer == "none":
        return "off"
    return "unknown"


@dataclass(frozen=True)
class ConnectionFlag:
    """Something worth acting on in a connection. JSON keys: ``code`` (stable), ``message``.

    Codes: ``no-keepalive-long-lived``, ``no-keepalive-age-unknown``, ``keepalive-probe-late``,
    ``keepalive-probes-unanswered``, ``keepalive-unknown-timer``, ``keepalive-unknown-platform``.
    """

    code: str
    message: str

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message}


def assess_connection(
    state: str,
    keepalive: ObservedKeepalive,
    *,
    timer: str | None,
    keepalive_timer_seconds: float | None,
    probes_out: int | None,
    idle_seconds: float | None,
    min_age_seconds: float | None,
    risk_seconds: float = DEFAULT_RISK_SECONDS,
) -> tuple[ConnectionFlag, ...]:
    """Flags for one connection (pure). ``risk_seconds`` is the idle time a middlebox may
    tolerate (default: the shortest common one that probes can beat, 240 s)."""
    risk = format_number(risk_seconds)
    flags: list[ConnectionFlag] = []
    if state not in _KEEPALIVE_CONCLUSIVE_STATES:
        return ()
    if keepalive == "off":
        if min_age_seconds is None and idle_seconds is None:
            flags.append(
                ConnectionFlag(
                    "no-keepalive-age-unknown",
                    "established connection without keepalive; its age is unknown, so it may "
                    f"already idle longer than a middlebox allows ({risk} s)",
                )
            )
        elif (min_age_seconds or 0) >= risk_seconds or (idle_seconds or 0) >= risk_seconds:
            detail = []
            if min_age_seconds is not None:
                detail.append(f"at least {format_number(round(min_age_seconds))} s old")
            if idle_seconds is not None:
                detail.append(f"idle {format_number(round(idle_seconds))} s")
            flags.append(
                ConnectionFlag(
                    "no-keepalive-long-lived",
                    f"long-lived established connection without keepalive ({', '.join(detail)}): "
                    f"a middlebox that forgets flows idle for {risk} s drops it silently",
                )
            )
    elif keepalive == "on":
        if keepalive_timer_seconds is not None and keepalive_timer_seconds > risk_seconds:
            flags.append(
                ConnectionFlag(
                    "keepalive-probe-late",
                    f"keepalive is on but the next probe is {round(keepalive_timer_seconds)} s "
                    f"away, later than middleboxes that forget idle flows after {risk} s",
                )
            )
        if probes_out:
            flags.append(
                ConnectionFlag(
                    "keepalive-probes-unanswered",
                    f"{probes_out} keepalive probe(s) unanswered: the peer or the path may be gone",
                )
            )
    elif timer is None:
        flags.append(
            ConnectionFlag(
                "keepalive-unknown-platform",
                "keepalive state unknown: this platform does not expose per-connection timers",
            )
        )
    else:
        flags.append(
            ConnectionFlag(
                "keepalive-unknown-timer",
                f"keepalive state unknown: a {timer} timer is pending (data in flight or a zero "
                "window), which hides the keepalive timer",
            )
        )
    return tuple(flags)


@dataclass(frozen=True)
class ConnectionReport:
    """One TCP connection of a process, with its keepalive state.

    JSON keys (stable): ``pid``, ``process_name``, ``fd``, ``family`` (``"ipv4"``/``"ipv6"``),
    ``local_address``, ``local_port``, ``remote_address``, ``remote_port``, ``local`` and
    ``remote`` (``"addr:port"``, IPv6 in brackets), ``state`` (``"ESTABLISHED"``, ...),
    ``keepalive`` (``"on"``/``"off"``/``"unknown"``), ``keepalive_timer_seconds`` (time to the
    next keepalive probe when on, else null), ``keepalive_probes_unanswered``, ``kernel_timer``
    (pending timer name or null), ``send_queue_bytes``, ``receive_queue_bytes``,
    ``idle_seconds`` (since the last traffic the kernel timestamps; null = unknown),
    ``min_age_seconds`` (the connection is at least this old; null = unknown; the exact age is
    not exposed by any kernel interface), ``uid``, ``inode``, ``source`` (``"sock_diag"``,
    ``"proc"`` or ``"psutil"``), ``flags`` (list of :class:`ConnectionFlag` objects).
    """

    pid: int | None
    process_name: str | None
    fd: int | None
    family: Family
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    state: str
    keepalive: ObservedKeepalive
    keepalive_timer_seconds: float | None
    keepalive_probes_unanswered: int | None
    kernel_timer: str | None
    send_queue_bytes: int | None
    receive_queue_bytes: int | None
    idle_seconds: float | None
    min_age_seconds: float | None
    uid: int | None
    inode: int | None
    source: str
    flags: tuple[ConnectionFlag, ...] = ()

    @property
    def local(self) -> str:
        return format_endpoint(self.local_address, self.local_port)

    @property
    def remote(self) -> str:
        return format_endpoint(self.remote_address, self.remote_port)

    def to_json(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "process_name": self.process_name,
            "fd": self.fd,
            "family": self.family,
            "local_address": self.local_address,
            "local_port": self.local_port,
            "remote_address": self.remote_address,
            "remote_port": self.remote_port,
            "local": self.local,
            "remote": self.remote,
            "state": self.state,
            "keepalive": self.keepalive,
            "keepalive_timer_seconds": self.keepalive_timer_seconds,
            "keepalive_probes_unanswered": self.keepalive_probes_unanswered,
            "kernel_timer": self.kernel_timer,
            "send_queue_bytes": self.send_queue_bytes,
            "receive_queue_bytes": self.receive_queue_bytes,
            "idle_seconds": self.idle_seconds,
            "min_age_seconds": self.min_age_seconds,
            "uid": self.uid,
            "inode": self.inode,
            "source": self.source,
            "flags": [flag.to_json() for flag in self.flags],
        }


def _report_from_kernel_socket(
    kernel: KernelSocket,
    *,
    pid: int | None,
    fd: int | None,
    process_name: str | None,
    risk_seconds: float = DEFAULT_RISK_SECONDS,
) -> ConnectionReport:
    """A :class:`ConnectionReport` for a kernel socket owned by ``pid`` (pure)."""
    keepalive = infer_keepalive(kernel.state, kernel.timer)
    lasts = [
        value
        for value in (kernel.last_data_sent, kernel.last_data_received, kernel.last_ack_received)
        if value is not None and kernel.state in _SYNCHRONIZED_STATES
    ]
    idle = min(lasts) if lasts else None
    min_age = max(lasts) if lasts else None
    timer_seconds = kernel.timer_seconds if keepalive == "on" else None
    probes = kernel.probes_out if keepalive == "on" else None
    return ConnectionReport(
        pid=pid,
        process_name=process_name,
        fd=fd,
        family=kernel.family,
        local_address=kernel.local_address,
        local_port=kernel.local_port,
        remote_address=kernel.remote_address,
        remote_port=kernel.remote_port,
        state=kernel.state,
        keepalive=keepalive,
        keepalive_timer_seconds=timer_seconds,
        keepalive_probes_unanswered=probes,
        kernel_timer=kernel.timer,
        send_queue_bytes=kernel.send_queue,
        receive_queue_bytes=kernel.receive_queue,
        idle_seconds=idle,
        min_age_seconds=min_age,
        uid=kernel.uid,
        inode=kernel.inode,
        source=kernel.source,
        flags=assess_connection(
            kernel.state,
            keepalive,
            timer=kernel.timer,
            keepalive_timer_seconds=timer_seconds,
            probes_out=probes,
            idle_seconds=idle,
            min_age_seconds=min_age,
            risk_seconds=risk_seconds,
        ),
    )


# --- the audit (I/O) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedProcess:
    """A process whose sockets could not be read. JSON keys: ``pid``, ``reason``."""

    pid: int
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"pid": self.pid, "reason": self.reason}


@dataclass(frozen=True)
class AuditResult:
    """What :func:`audit` found. JSON keys: ``connections`` (list of :class:`ConnectionReport`
    objects), ``source`` (the sources read, joined with ``+``: ``"sock_diag"``, ``"proc"``,
    ``"proc+sock_diag"``, ``"psutil"``, or ``"none"`` when no process held a socket),
    ``skipped`` (processes that could not be inspected), ``notes`` (fallbacks taken and
    limits, in words)."""

    connections: tuple[ConnectionReport, ...]
    source: str
    skipped: tuple[SkippedProcess, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "connections": [report.to_json() for report in self.connections],
            "source": self.source,
            "skipped": [skip.to_json() for skip in self.skipped],
            "notes": list(self.notes),
        }


def _process_name(pid: int) -> str | None:
    import psutil  # noqa: PLC0415

    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return None


def _validated_pids(pids: Sequence[int] | None) -> list[int] | None:
    if pids is None:
        return None
    if isinstance(pids, (str, bytes)):
        raise TypeError("pids must be a sequence of process ids, not a string")
    return [positive_int("pids", pid) for pid in pids]


def audit(
    pids: Sequence[int] | None = None,
    *,
    source: AuditSource = "auto",
    include_listening: bool = False,
    risk_seconds: float = DEFAULT_RISK_SECONDS,
) -> AuditResult:
    """Audit the TCP connections of ``pids`` (None: every process we may inspect).

    ``source``: ``"auto"`` uses sock_diag where the kernel offers it, then ``/proc/net/tcp``,
    then psutil (keepalive ``"unknown"``); the others force one source. Listening sockets are
    left out unless ``include_listening``. An explicitly named pid that does not exist raises
    ProcessLookupError, one we may not inspect PermissionError; with ``pids=None`` such
    processes are listed in ``skipped``. Sockets of processes in another network namespace are
    read from that process's ``/proc/PID/net/tcp``.
    """
    wanted = _validated_pids(pids)
    risk = positive_seconds("risk_seconds", risk_seconds)
    if source not in ("auto", "sock_diag", "proc", "psutil"):
        raise ValueError(f"source={source!r} is not one of 'auto', 'sock_diag', 'proc', 'psutil'")
    linux_proc = has_proc_net()
    if source == "psutil" or (source == "auto" and not linux_proc):
        return _audit_psutil(wanted, include_listening, risk)
    if not linux_proc:
        raise OSError(errno.ENOENT, f"source={source!r} needs Linux /proc/net/tcp")
    return _audit_linux(wanted, source, include_listening, risk)


def audit_connections(
    pids: Sequence[int] | None = None,
    *,
    source: AuditSource = "auto",
    include_listening: bool = False,
    risk_seconds: float = DEFAULT_RISK_SECONDS,
) -> list[ConnectionReport]:
    """The connections of :func:`audit` (same arguments), ordered by pid, then fd."""
    return list(
        audit(
            pids, source=source, include_listening=include_listening, risk_seconds=risk_seconds
        ).connections
    )


def _audit_linux(
    wanted: list[int] | None,
    source: AuditSource,
    include_listening: bool,
    risk: float,
) -> AuditResult:
    skipped: list[SkippedProcess] = []
    notes: list[str] = []
    owners: dict[int, list[tuple[int, int]]] = {}  # inode -> [(pid, fd)]
    namespaces: dict[int | None, int] = {}  # net namespace -> a pid living in it
    for pid in wanted if wanted is not None else all_pids():
        try:
            inodes = socket_inodes(pid)
        except FileNotFoundError:
            if wanted is not None:
                raise ProcessLookupError(errno.ESRCH, f"no process with pid {pid}") from None
            continue
        except PermissionError:
            if wanted is not None:
                raise PermissionError(
                    errno.EACCES, f"not permitted to read the sockets of pid {pid}"
                ) from None
            skipped.append(SkippedProcess(pid, "permission denied"))
            continue
        if not inodes:
            continue
        for inode, fd in inodes.items():
            owners.setdefault(inode, []).append((pid, fd))
        namespaces.setdefault(net_namespace(pid), pid)

    own_namespace = net_namespace("self")
    ticks = clock_ticks()
    kernel_sockets: list[KernelSocket] = []
    used: list[str] = []
    for namespace, pid in namespaces.items():
        if namespace == own_namespace or namespace is None:
            found, own_source = _own_namespace_sockets(source, ticks, notes)
            used.append(own_source)
        else:
            try:
                found = read_proc_net_tcp(f"/proc/{pid}/net", ticks)
            except OSError as error:
                notes.append(f"network namespace of pid {pid} unreadable: {error}")
                continue
            notes.append(f"pid {pid}'s network namespace read from /proc/{pid}/net/tcp")
            used.append("proc")
        kernel_sockets.extend(found)

    names: dict[int, str | None] = {}
    reports: list[ConnectionReport] = []
    for kernel in kernel_sockets:
        if kernel.inode == 0 or kernel.inode not in owners:
            continue
        if kernel.state == "LISTEN" and not include_listening:
            continue
        for pid, fd in owners.pop(kernel.inode):
            if pid not in names:
                names[pid] = _process_name(pid)
            reports.append(
                _report_from_kernel_socket(
                    kernel, pid=pid, fd=fd, process_name=names[pid], risk_seconds=risk
                )
            )
    reports.sort(key=lambda report: (report.pid or 0, report.fd or 0))
    sources = "+".join(sorted(set(used))) or "none"
    return AuditResult(tuple(reports), sources, tuple(skipped), tuple(dict.fromkeys(notes)))


def _own_namespace_sockets(
    source: AuditSource, ticks: int, notes: list[str]
) -> tuple[list[KernelSocket], str]:
    if source in ("auto", "sock_diag"):
        try:
            found: list[KernelSocket] = []
            for family in (socket.AF_INET, socket.AF_INET6):
                try:
                    found.extend(sock_diag_dump(family))
                except OSError as error:
                    if family == socket.AF_INET6 and error.errno in (
                        errno.EAFNOSUPPORT,
                        errno.ENOENT,
                    ):
                        continue  # IPv6 disabled: nothing to list
                    raise
            return found, "sock_diag"
        except (OSError, ValueError, AttributeError) as error:
            if source == "sock_diag":
                raise
            notes.append(f"sock_diag unavailable ({error}); read /proc/net/tcp instead")
    return read_proc_net_tcp("/proc/self/net", ticks), "proc"


def _psutil_connections(
    wanted: list[int] | None, skipped: list[SkippedProcess]
) -> list[tuple[int | None, int, int, tuple[str, int], tuple[str, int] | None, str]]:
    """(pid, fd, family, laddr, raddr, status) of TCP sockets, via psutil."""
    import psutil  # noqa: PLC0415

    rows: list[tuple[int | None, int, int, tuple[str, int], tuple[str, int] | None, str]] = []
    if wanted is None:
        try:
            for conn in psutil.net_connections(kind="tcp"):
                raddr = (conn.raddr[0], conn.raddr[1]) if conn.raddr else None
                laddr = (conn.laddr[0], conn.laddr[1]) if conn.laddr else ("", 0)
                rows.append((conn.pid, conn.fd, conn.family, laddr, raddr, conn.status))
            return rows
        except psutil.AccessDenied:  # macOS without root: go process by process
            pass
    explicit = wanted is not None
    for pid in wanted if wanted is not None else psutil.pids():
        try:
            found = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            if explicit:
                raise ProcessLookupError(errno.ESRCH, f"no process with pid {pid}") from None
            continue
        except psutil.AccessDenied:
            if explicit:
                raise PermissionError(
                    errno.EACCES, f"not permitted to read the sockets of pid {pid}"
                ) from None
            skipped.append(SkippedProcess(pid, "permission denied"))
            continue
        for pconn in found:
            raddr = (pconn.raddr[0], pconn.raddr[1]) if pconn.raddr else None
            laddr = (pconn.laddr[0], pconn.laddr[1]) if pconn.laddr else ("", 0)
            rows.append((pid, pconn.fd, pconn.family, laddr, raddr, pconn.status))
    return rows


def _audit_psutil(wanted: list[int] | None, include_listening: bool, risk: float) -> AuditResult:
    skipped: list[SkippedProcess] = []
    names: dict[int, str | None] = {}
    reports: list[ConnectionReport] = []
    for pid, fd, family_code, laddr, raddr, raw_status in _psutil_connections(wanted, skipped):
        status = str(raw_status).upper()
        if (status == "LISTEN" and not include_listening) or status == "NONE" or not laddr[0]:
            continue
        if pid is not None and pid not in names:
            names[pid] = _process_name(pid)
        family: Family = "ipv6" if family_code == socket.AF_INET6 else "ipv4"
        reports.append(
            ConnectionReport(
                pid=pid,
                process_name=names.get(pid) if pid is not None else None,
                fd=fd if fd >= 0 else None,
                family=family,
                local_address=laddr[0],
                local_port=laddr[1],
                remote_address=raddr[0] if raddr else "",
                remote_port=raddr[1] if raddr else 0,
                state=status,
                keepalive="unknown",
                keepalive_timer_seconds=None,
                keepalive_probes_unanswered=None,
                kernel_timer=None,
                send_queue_bytes=None,
                receive_queue_bytes=None,
                idle_seconds=None,
                min_age_seconds=None,
                uid=None,
                inode=None,
                source="psutil",
                flags=assess_connection(
                    status,
                    "unknown",
                    timer=None,
                    keepalive_timer_seconds=None,
                    probes_out=None,
                    idle_seconds=None,
                    min_age_seconds=None,
                    risk_seconds=risk,
                ),
            )
        )
    reports.sort(key=lambda report: (report.pid or 0, report.fd or 0))
    return AuditResult(
        tuple(reports),
        "psutil",
        tuple(skipped),
        ("psutil does not expose per-connection keepalive state: keepalive is 'unknown'",),
    )
