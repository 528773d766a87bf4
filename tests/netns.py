"""Private network namespaces for tests: real loss, black holes and resets, on loopback only.

``with private_netns() as ns:`` moves the *calling thread* into a fresh, empty network namespace
with its loopback up, and back out on exit. Everything the body creates there (sockets, threads
started inside, subprocesses) lives in that namespace: its own ``lo``, its own ports, its own
nftables ruleset. ``ns.black_hole(port)``, ``ns.reset(port)`` and ``ns.random_loss(port, 25)``
add nftables rules to a table of ours in that namespace; they vanish with it.

Design: the namespace switch is per thread, not per process. Linux keeps the network namespace
per task (thread), so ``unshare(CLONE_NEWNET)`` in one thread leaves the rest of the process
(pytest, xdist's I/O thread) where it was, and ``setns()`` on a saved handle brings the thread
back. A socket belongs to the namespace it was created in for its whole life. Compared with
forking a child per test (or ``unshare -n python ...``), the body is ordinary test code: fixtures,
assertion rewriting, tracebacks and debuggers work; nothing is pickled; and no process that
holds other threads (an xdist worker) is forked. Caveats: sockets made by threads started
*before* entering stay in the outer namespace; leave from the thread that entered.

Safety: nothing here ever runs outside a namespace it created itself. Every nft call first
checks that the calling thread is inside that namespace (by inode), and the availability probe
runs in a throwaway thread whose namespace dies with it. Loopback is brought up with an ioctl,
so neither ``ip`` nor ``unshare(1)`` is needed; ``nft`` is, for rules.

Skip policy: where namespaces or nftables are unusable (not root, no CAP_SYS_ADMIN, no ``nft``,
a kernel without nf_tables), tests skip with the reason, unless ``KEEPALIVE_REQUIRE_NETNS=1``
(CI sets it): then they fail. Tests using the fixture must carry ``@pytest.mark.netns``::

    from netns import Namespace, netns_fixture  # noqa: F401 - netns_fixture is a fixture

    @pytest.mark.netns
    def test_black_hole(netns: Namespace) -> None:
        listener = socket.create_server(("127.0.0.1", 0))  # in the private namespace
        ...
        netns.black_hole(port)  # both directions, from now on
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import itertools
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, NoReturn

import pytest

__all__ = [
    "REQUIRE_ENV",
    "TABLE",
    "Direction",
    "Fault",
    "Namespace",
    "netns_fixture",
    "private_netns",
    "require_netns",
    "unavailable_reason",
]

REQUIRE_ENV = "KEEPALIVE_REQUIRE_NETNS"
"""When this environment variable is ``1``, unusable namespaces fail tests instead of skipping."""

TABLE = "keepalive_faults"
"""Our nftables table (family ``inet``: IPv4 and IPv6) inside each private namespace."""

Direction = Literal["to_port", "from_port", "both"]
"""Which segments of a connection a rule hits. Both ends share the namespace's loopback, so a
port says which side: ``"to_port"`` are segments sent *to* the listening port (by the connecting
side), ``"from_port"`` segments sent *from* it (by the accepting side)."""

CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h
_SIOCGIFFLAGS = 0x8913  # include/uapi/linux/sockios.h
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1  # include/uapi/linux/if.h
_IFREQ_FLAGS = struct.Struct("16sH22x")  # struct ifreq: name, then ifr_flags in a 24-byte union

# The rules are hooked at `input`: a dropped segment has left its sender normally (as onto a
# wire) and is lost on arrival. Dropping at `output` would instead make the sender's transmit
# fail with EPERM, which TCP treats differently from loss. `reject` is valid at `input`.
_TABLE_SCRIPT = f"""
table inet {TABLE} {{
    chain input {{
        type filter hook input priority filter; policy accept;
    }}
}}
"""
# Checks that the kernel supports everything the fault methods use.
_PROBE_SCRIPT = (
    _TABLE_SCRIPT
    + f"""
add rule inet {TABLE} input tcp dport 9 numgen random mod 100 < 25 counter drop comment "probe"
add rule inet {TABLE} input tcp dport 9 counter reject with tcp reset comment "probe"
"""
)
_RULE_LINE = re.compile(r'counter packets (\d+) bytes \d+ .*comment "([^"]+)" # handle (\d+)')


# -- syscalls -------------------------------------------------------------------------------------


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _unshare_net() -> None:
    native: Callable[[int], None] | None = getattr(os, "unshare", None)  # Python 3.12+
    if native is not None:
        native(CLONE_NEWNET)
        return
    if _libc().unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")


def _setns_net(fd: int) -> None:
    native: Callable[[int, int], None] | None = getattr(os, "setns", None)  # Python 3.12+
    if native is not None:
        native(fd, CLONE_NEWNET)
        return
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns(CLONE_NEWNET): {os.strerror(code)}")


def _thread_netns_path() -> str:
    # /proc/self/ns/net is the thread group leader's; we need the calling thread's.
    return f"/proc/self/task/{threading.get_native_id()}/ns/net"


def _current_netns_inode() -> int:
    return os.stat(_thread_netns_path()).st_ino


def _bring_loopback_up() -> None:
    """``ip link set lo up`` for the calling thread's namespace; the kernel then gives ``lo``
    127.0.0.1/8 and ::1 by itself."""
    import fcntl  # POSIX only: imported here so that collecting tests works on Windows

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
        request = _IFREQ_FLAGS.pack(b"lo", 0)
        _, flags = _IFREQ_FLAGS.unpack(fcntl.ioctl(control, _SIOCGIFFLAGS, request))
        fcntl.ioctl(control, _SIOCSIFFLAGS, _IFREQ_FLAGS.pack(b"lo", flags | _IFF_UP))


def _run_nft(script: str, *options: str) -> str:
    """Run ``nft [options] -f -`` in the calling thread's namespace (a child inherits the
    spawning thread's namespace); raise OSError with nft's message on failure."""
    nft = shutil.which("nft")
    if nft is None:
        raise OSError(errno.ENOENT, "nft (nftables) not found on PATH")
    done = subprocess.run(
        [nft, *options, "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise OSError(errno.EINVAL, f"nft failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


# -- availability and the skip policy -------------------------------------------------------------


@functools.cache
def unavailable_reason(nft: bool = True) -> str | None:
    """Why private namespaces (and, with ``nft``, our nftables rules) cannot be used here, or
    None when they can. Probed once per process, in a throwaway thread whose namespace dies
    with it, so the caller's namespace is never touched."""
    if sys.platform != "linux":
        return f"network namespaces need Linux (this is {sys.platform})"
    if nft and shutil.which("nft") is None:
        return "nft (nftables) not found on PATH"
    problems: list[str] = []

    def probe() -> None:
        try:
            _unshare_net()
        except OSError as exc:
            hint = " (needs root or CAP_SYS_ADMIN)" if exc.errno == errno.EPERM else ""
            problems.append(f"cannot create a network namespace: {exc}{hint}")
            return
        except AttributeError as exc:  # a libc without unshare()
            problems.append(f"cannot create a network namespace: {exc}")
            return
        try:
            _bring_loopback_up()
            if nft:
                _run_nft(_PROBE_SCRIPT)
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"private namespace unusable: {exc}")

    thread = threading.Thread(target=probe, name="netns-probe", daemon=True)
    thread.start()
    thread.join()
    return problems[0] if problems else None


def require_netns(*, nft: bool = True) -> None:
    """Skip the running test when namespaces are unusable here, or fail it when
    ``KEEPALIVE_REQUIRE_NETNS=1``."""
    reason = unavailable_reason(nft)
    if reason is not None:
        _skip_or_fail(reason)


def _skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires network-namespace tests to run")
    pytest.skip(f"{reason} (set {REQUIRE_ENV}=1 to make this a failure)")


# -- the namespace and its faults -----------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """The nftables rules one fault method added; count their packets or remove them."""

    namespace: Namespace
    labels: tuple[str, ...]

    @property
    def packets(self) -> int:
        """Segments these rules have matched (dropped or rejected) so far."""
        counts = self.namespace.rule_counters()
        return sum(counts.get(label, 0) for label in self.labels)

    def remove(self) -> None:
        """Heal the path: delete these rules (segments flow again from now on)."""
        self.namespace.remove_rules(self.labels)


@dataclass
class Namespace:
    """A private network namespace the calling thread is in (see :func:`private_netns`)."""

    inode: int
    outer_inode: int
    _table_ready: bool = field(default=False, repr=False)
    _sequence: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def nft(self, script: str, *options: str) -> str:
        """Run an nftables script (``nft [options] -f -``) in this namespace; return nft's
        output."""
        current = _current_netns_inode()
        if current != self.inode or current == self.outer_inode:
            raise RuntimeError(
                f"refusing to run nft: this thread is in namespace {current}, not in the "
                f"private namespace {self.inode} (call it from a thread inside the namespace)"
            )
        return _run_nft(script, *options)

    def black_hole(self, port: int, direction: Direction = "both") -> Fault:
        """Silently drop the TCP segments of ``port`` (from now on): no answer, no RST.

        ``"both"`` is a peer host that vanished. ``"from_port"`` alone also leaves the
        connecting side unanswered, while its segments still reach the listening side.
        """
        return self._add("drop", port, direction, "", "drop")

    def reset(self, port: int, direction: Literal["to_port", "from_port"] = "to_port") -> Fault:
        """Answer every TCP segment of ``port`` in ``direction`` with a RST to its sender
        (nft ``reject with tcp reset``): ``"to_port"`` resets the connecting side the next
        time it sends anything (data or a keepalive probe). One direction only: the other
        must let the RSTs through."""
        return self._add("reset", port, direction, "", "reject with tcp reset")

    def random_loss(self, port: int, percent: int, direction: Direction = "both") -> Fault:
        """Drop a random ``percent`` % of the TCP segments of ``port``, independently per
        segment and per direction (nft ``numgen random mod 100 < percent``)."""
        if not 0 < percent <= 100:
            raise ValueError(f"percent must be in 1..100, got {percent!r}")
        # The counter follows the random match, so it counts the dropped segments only.
        condition = f"numgen random mod 100 < {percent}"
        return self._add(f"loss{percent}", port, direction, condition, "drop")

    def clear(self) -> None:
        """Remove every rule: the namespace's loopback is healthy again."""
        if self._table_ready:
            self.nft(f"flush chain inet {TABLE} input\n")

    def ruleset(self) -> str:
        """Our table with its counters (for failure messages)."""
        if not self._table_ready:
            return f"(no table {TABLE} yet)"
        return self.nft(f"list table inet {TABLE}\n")

    def rule_counters(self) -> dict[str, int]:
        """Packets matched per rule label."""
        return {label: packets for label, packets, _ in self._rules()}

    def remove_rules(self, labels: tuple[str, ...]) -> None:
        handles = [handle for label, _, handle in self._rules() if label in labels]
        if handles:
            self.nft(
                "".join(f"delete rule inet {TABLE} input handle {handle}\n" for handle in handles)
            )

    def _rules(self) -> list[tuple[str, int, int]]:
        if not self._table_ready:
            return []
        listing = self.nft(f"list chain inet {TABLE} input\n", "--handle")
        return [
            (match[2], int(match[1]), int(match[3]))
            for match in map(_RULE_LINE.search, listing.splitlines())
            if match
        ]

    def _add(
        self, kind: str, port: int, direction: Direction, condition: str, verdict: str
    ) -> Fault:
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port!r}")
        if direction not in ("to_port", "from_port", "both"):
            raise ValueError(
                f"direction must be 'to_port', 'from_port' or 'both', not {direction!r}"
            )
        matches = {"to_port": [f"tcp dport {port}"], "from_port": [f"tcp sport {port}"]}
        matches["both"] = matches["to_port"] + matches["from_port"]
        script = "" if self._table_ready else _TABLE_SCRIPT
        labels: list[str] = []
        for match in matches[direction]:
            label = f"{kind}:{match.replace(' ', '-')}:{next(self._sequence)}"
            labels.append(label)
            rule = " ".join(part for part in (match, condition, "counter", verdict) if part)
            script += f'add rule inet {TABLE} input {rule} comment "{label}"\n'
        self.nft(script)
        self._table_ready = True
        return Fault(self, tuple(labels))


@contextmanager
def private_netns(*, nft: bool = True) -> Iterator[Namespace]:
    """Run the body with the calling thread in a fresh network namespace, loopback up.

    Skips (or fails, see :data:`REQUIRE_ENV`) when namespaces, or with ``nft`` our nftables
    rules, are unusable here. On exit the thread returns to the namespace it came from; the
    private one disappears once its last socket is closed.
    """
    require_netns(nft=nft)
    thread = threading.get_native_id()
    outer = os.open(_thread_netns_path(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        outer_inode = os.fstat(outer).st_ino
        _unshare_net()
        try:
            inode = _current_netns_inode()
            if inode == outer_inode:
                raise RuntimeError("unshare(CLONE_NEWNET) left the thread in its namespace")
            _bring_loopback_up()
            yield Namespace(inode=inode, outer_inode=outer_inode)
        finally:
            if threading.get_native_id() != thread:
                raise RuntimeError("private_netns() must be left from the thread that entered it")
            _setns_net(outer)
            if _current_netns_inode() != outer_inode:
                raise RuntimeError("could not return the thread to its network namespace")
    finally:
        os.close(outer)


@pytest.fixture(name="netns")
def netns_fixture(request: pytest.FixtureRequest) -> Iterator[Namespace]:
    """The test (and the fixtures it requests after this one) runs in a private namespace."""
    if request.node.get_closest_marker("netns") is None:
        pytest.fail(
            "tests using the netns fixture must be marked @pytest.mark.netns "
            "(CI selects and requires them by that marker)"
        )
    with private_netns() as namespace:
        yield namespace
