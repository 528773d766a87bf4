"""One exception hierarchy under :class:`KeepaliveError`.

Each class also derives from the builtin that existing ``except`` clauses already catch:
a bad setting is a ``ValueError`` (or ``TypeError``), an OS refusal an ``OSError``, a dead
peer a ``ConnectionError``.
"""

from __future__ import annotations

import errno

__all__ = [
    "ConnectFailed",
    "InvalidSetting",
    "InvalidSettingType",
    "InvalidSocket",
    "KeepaliveError",
    "PeerUnresponsive",
    "SocketOptionError",
    "UnsupportedOption",
]


class KeepaliveError(Exception):
    """Root of every error this library raises on purpose."""


class InvalidSetting(KeepaliveError, ValueError):
    """A setting's value is out of range, here or on every platform.

    ``field`` names the setting, ``value`` is what was given, ``allowed`` describes the range
    and ``platform`` is set when the range is the running platform's own.
    """

    def __init__(
        self,
        field: str,
        value: object,
        allowed: str,
        *,
        platform: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.platform = platform
        where = f" on {platform}" if platform else ""
        message = f"{field}={value!r} is not allowed{where}: expected {allowed}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class InvalidSettingType(InvalidSetting, TypeError):
    """A setting has the wrong type (a ``bool``, a string, ...)."""


class InvalidSocket(KeepaliveError, ValueError):
    """The object is not an open TCP socket (UDP, Unix domain, closed, no ``fileno()``)."""


class UnsupportedOption(KeepaliveError, OSError):
    """A setting cannot be honoured on this platform (raised by ``strict=True``)."""

    def __init__(self, setting: str, platform: str, reason: str) -> None:
        self.setting = setting
        self.platform = platform
        self.reason = reason
        super().__init__(
            errno.ENOPROTOOPT, f"{setting} cannot be set per socket on {platform}: {reason}"
        )

    def __str__(self) -> str:
        return str(self.args[1])


class SocketOptionError(KeepaliveError, OSError):
    """The OS refused a socket option; ``option`` names it, ``errno`` is the OS's code.

    Options applied before the failing one have been restored to their previous values
    (``restored`` is False when even that failed; the socket's state is then unknown).
    """

    def __init__(
        self, option: str, cause: OSError, *, restored: bool = True, action: str = "set"
    ) -> None:
        self.option = option
        self.restored = restored
        detail = cause.strerror or str(cause)
        suffix = "" if restored else "; restoring the earlier options failed too"
        super().__init__(cause.errno, f"could not {action} {option}: {detail}{suffix}")
        self.__cause__ = cause

    def __str__(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()


class PeerUnresponsive(KeepaliveError, ConnectionError):
    """The peer did not answer the heartbeat in time: it is gone or unreachable."""


class ConnectFailed(KeepaliveError, ConnectionError):
    """Every connection attempt failed (or retrying stopped); ``attempts`` holds each cause.

    ``attempts`` is a tuple of :class:`~keepalive.dial.AttemptFailure` (attempt number,
    address tried, the error); ``reason`` says why retrying stopped: ``"exhausted"``,
    ``"deadline"``, ``"cancelled"`` or ``"no retry"``. ``__cause__`` is the last error.
    """

    def __init__(self, message: str, attempts: tuple[object, ...], reason: str) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.reason = reason
