"""Validation of user-supplied numbers, shared by every config value type."""

from __future__ import annotations

import math
from numbers import Integral, Real

from keepalive.errors import InvalidSetting, InvalidSettingType


def positive_seconds(field: str, value: object, *, allow_zero: bool = False) -> float:
    """A finite duration in seconds (int or float, not bool): > 0, or >= 0 with allow_zero."""
    allowed = "a finite number of seconds " + (">= 0" if allow_zero else "> 0")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidSettingType(field, value, allowed)
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise InvalidSetting(field, value, allowed)
    if number < 0 or (number == 0 and not allow_zero):
        raise InvalidSetting(field, value, allowed)
    return number


def positive_int(field: str, value: object, *, minimum: int = 1) -> int:
    """A whole count (int, not bool; a float with no fraction is refused too)."""
    allowed = f"a whole number >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InvalidSettingType(field, value, allowed)
    number = int(value)
    if number < minimum:
        raise InvalidSetting(field, value, allowed)
    return number
