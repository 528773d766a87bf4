"""A recording fake socket and the socket-module namespaces of other OSes, for platform tests.

`FakeSocket` stands in for a TCP socket of another OS: it records every setsockopt,
getsockopt and ioctl call with (level, optname, value), keeps what was set so reads return
it, and can refuse chosen options with an OSError. The namespaces come from
`keepalive.platforms.catalog` (each constant's header is cited there); the extra ones here
are variants only the tests need.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from keepalive.platforms import Platform, detect
from keepalive.platforms.catalog import (
    DARWIN_PY39,
    DARWIN_PY310,
    DRAGONFLY,
    FREEBSD,
    ILLUMOS,
    LINUX,
    NETBSD,
    OPENBSD,
    SOLARIS_11_4,
    SOLARIS_OLD,
    VARIANTS,
    WINDOWS_1703,
    WINDOWS_1709,
    WINDOWS_OLD,
    Variant,
    variant,
)

__all__ = [
    "DARWIN_PY39",
    "DARWIN_PY310",
    "DARWIN_PY_OLD_SDK",
    "DRAGONFLY",
    "FREEBSD",
    "ILLUMOS",
    "LINUX",
    "NETBSD",
    "OPENBSD",
    "SOLARIS_11_4",
    "SOLARIS_OLD",
    "VARIANTS",
    "WINDOWS_1703",
    "WINDOWS_1709",
    "WINDOWS_OLD",
    "Call",
    "FakeSocket",
    "Variant",
    "platform_for",
    "variant",
]

# A Python built against a pre-10.9 macOS SDK: xnu bsd/netinet/tcp.h had TCP_KEEPALIVE only
# (TCP_KEEPINTVL and TCP_KEEPCNT arrived in xnu-2422, OS X 10.9).
DARWIN_PY_OLD_SDK = SimpleNamespace(SOL_SOCKET=0xFFFF, SO_KEEPALIVE=0x8, IPPROTO_TCP=6)


def platform_for(label: str) -> Platform:
    """The platform description of the catalog variant called ``label``."""
    item = variant(label)
    return detect(item.sys_platform, item.namespace, item.release)


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded call: ``op`` is "setsockopt", "getsockopt" or "ioctl"."""

    op: str
    level: int
    optname: int
    value: Any = None


class FakeSocket:
    """A TCP socket double that records calls and remembers option values.

    ``initial`` gives values that reads return before anything is set (0 otherwise);
    ``readable`` limits which ``(level, optname)`` getsockopt answers (None: all of them; the
    others raise ENOPROTOOPT like NetBSD's keepalive options); ``fail_on`` lists the
    ``(level, optname)`` setsockopt refuses with EINVAL, and ``fail_ioctl`` the ioctl
    control codes refused likewise.
    """

    def __init__(
        self,
        family: int = socket.AF_INET,
        type: int = socket.SOCK_STREAM,
        *,
        readable: Collection[tuple[int, int]] | None = None,
        fail_on: Collection[tuple[int, int]] = (),
        fail_ioctl: Collection[int] = (),
        initial: Mapping[tuple[int, int], int] | None = None,
    ) -> None:
        self._family = family
        self._type = type
        self.readable = None if readable is None else set(readable)
        self.fail_on = set(fail_on)
        self.fail_ioctl = set(fail_ioctl)
        self.values: dict[tuple[int, int], int] = dict(initial or {})
        self.ioctls: dict[int, object] = {}
        self.calls: list[Call] = []
        self.closed = False

    # Properties, as on socket.socket: keepalive.sockets duck-types on the class's attributes.
    @property
    def family(self) -> int:
        return self._family

    @property
    def type(self) -> int:
        return self._type

    @property
    def proto(self) -> int:
        return socket.IPPROTO_TCP

    def fileno(self) -> int:
        return -1 if self.closed else 3

    def setsockopt(self, level: int, optname: int, value: int, /) -> None:
        self.calls.append(Call("setsockopt", level, optname, value))
        if (level, optname) in self.fail_on:
            raise OSError(errno.EINVAL, f"option {level}/{optname:#x} refused by the fake")
        self.values[(level, optname)] = value

    def getsockopt(self, level: int, optname: int, /) -> int:
        self.calls.append(Call("getsockopt", level, optname))
        if self.readable is not None and (level, optname) not in self.readable:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        return self.values.get((level, optname), 0)

    def ioctl(self, control: int, value: object, /) -> None:
        self.calls.append(Call("ioctl", 0, control, value))
        if control in self.fail_ioctl:
            raise OSError(errno.EINVAL, f"ioctl {control:#x} refused by the fake")
        self.ioctls[control] = value

    # -- what the tests look at -------------------------------------------------------------

    def writes(self) -> list[tuple[str, int, int, Any]]:
        """The setsockopt and ioctl calls, in order: ``(op, level, optname, value)``."""
        return [
            (call.op, call.level, call.optname, call.value)
            for call in self.calls
            if call.op != "getsockopt"
        ]

    def value(self, level: int, optname: int) -> int | None:
        return self.values.get((level, optname))
