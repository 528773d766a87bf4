"""Validation of user-supplied values, shared by every config value type."""

from __future__ import annotations

import math

from keepalive.errors import InvalidSetting, InvalidSettingType

TYPE_CHECKING = False  # typing stays unimported on the first-use path (mypy reads it as True)
if TYPE_CHECKING:
    from numbers import Integral, Real
    from typing import TypeGuard

#: Counts are C ints in every OS's socket API.
INT_MAX = 2**31 - 1

#: The highest TCP port number.
PORT_MAX = 65535


def positive_seconds(field: str, value: object, *, allow_zero: bool = False) -> float:
    """A finite duration in seconds (int or float, not bool): > 0, or >= 0 with allow_zero."""
    allowed = "a finite number of seconds " + (">= 0" if allow_zero else "> 0")
    if type(value) is not float and type(value) is not int and not _is_real(value):
        raise InvalidSettingType(field, value, allowed)
    try:
        number = float(value)
    except (OverflowError, ValueError) as exc:  # an int or Fraction beyond float range
        raise InvalidSetting(field, value, allowed) from exc
    if math.isnan(number) or math.isinf(number):
        raise InvalidSetting(field, value, allowed)
    if number < 0 or (number == 0 and not allow_zero):
        raise InvalidSetting(field, value, allowed)
    return number


def positive_int(field: str, value: object, *, minimum: int = 1, maximum: int = INT_MAX) -> int:
    """A whole count (int, not bool; a float with no fraction is refused too)."""
    allowed = f"a whole number from {minimum} to {maximum}"
    if type(value) is not int and not _is_integral(value):
        raise InvalidSettingType(field, value, allowed)
    number = int(value)
    if not minimum <= number <= maximum:
        raise InvalidSetting(field, value, allowed)
    return number


# The exact types int and float are checked above without the `numbers` ABCs, whose import
# (and isinstance through ABCMeta) costs more than everything else on configure()'s first use.


def _is_real(value: object) -> TypeGuard[Real]:
    """A real number other than a bool."""
    from numbers import Real  # noqa: PLC0415 - only for other types than int and float

    return not isinstance(value, bool) and isinstance(value, Real)


def _is_integral(value: object) -> TypeGuard[Integral]:
    """A whole number other than a bool."""
    from numbers import Integral  # noqa: PLC0415 - only for other types than int

    return not isinstance(value, bool) and isinstance(value, Integral)


def flag(field: str, value: object) -> bool:
    """A real ``bool``: truthy junk such as ``"no"`` or ``[]`` is refused, not guessed at."""
    if not isinstance(value, bool):
        raise InvalidSettingType(field, value, "True or False")
    return value


def check_address(
    address: object, *, field: str = "address", allow_port_zero: bool = False
) -> tuple[str, int]:
    """A ``(host, port)`` tuple: a host name or address ``str`` that the resolver can take,
    and a whole ``int`` port from 1 (0 with ``allow_port_zero``, e.g. to bind) to 65535.

    The one address check of the library: a wrong shape or type raises
    :class:`InvalidSettingType` naming ``field``; a port out of range :class:`InvalidSetting`
    naming ``port`` (``<field>.port`` for another field than ``address``), a host holding a NUL
    (C would cut ``"127.0.0.1\\0junk"`` short to ``127.0.0.1``) :class:`InvalidSetting` naming
    ``host`` (``<field>.host``). The host name is not judged further: nothing is resolved
    here, and a name that cannot be is a resolution failure where it is resolved.
    """
    lowest = 0 if allow_port_zero else 1
    allowed = f"a (host: str, port: int {lowest}..{PORT_MAX}) tuple"
    if not (isinstance(address, tuple) and len(address) == 2):
        raise InvalidSettingType(field, address, allowed)
    host, port = address
    if not isinstance(host, str):
        raise InvalidSettingType(field, address, allowed, hint="the host must be a str")
    prefix = "" if field == "address" else f"{field}."
    where = f"in {field} {address!r}"
    if "\0" in host:
        raise InvalidSetting(f"{prefix}host", host, "a host name or address", hint="NUL character")
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidSettingType(
            f"{prefix}port", port, f"an int from {lowest} to {PORT_MAX}", hint=where
        )
    if not lowest <= port <= PORT_MAX:
        # socket.connect() would take the port modulo 65536 on some paths: never let it.
        raise InvalidSetting(
            f"{prefix}port", port, f"an int from {lowest} to {PORT_MAX}", hint=where
        )
    return host, port
