"""Validation of user-supplied values, shared by every config value type."""

from __future__ import annotations

import math
from numbers import Integral, Real

from keepalive.errors import InvalidSetting, InvalidSettingType

#: Counts are C ints in every OS's socket API.
INT_MAX = 2**31 - 1


def positive_seconds(field: str, value: object, *, allow_zero: bool = False) -> float:
    """A finite duration in seconds (int or float, not bool): > 0, or >= 0 with allow_zero."""
    allowed = "a finite number of seconds " + (">= 0" if allow_zero else "> 0")
    if isinstance(value, bool) or not isinstance(value, Real):
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
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InvalidSettingType(field, value, allowed)
    number = int(value)
    if not minimum <= number <= maximum:
        raise InvalidSetting(field, value, allowed)
    return number


def flag(field: str, value: object) -> bool:
    """A real ``bool``: truthy junk such as ``"no"`` or ``[]`` is refused, not guessed at."""
    if not isinstance(value, bool):
        raise InvalidSettingType(field, value, "True or False")
    return value
