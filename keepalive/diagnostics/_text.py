"""How the diagnostics write numbers and endpoints in their messages and JSON: one rule each."""

from __future__ import annotations


def format_number(value: float) -> str:
    """``240`` for 240.0, ``0.5`` for 0.5: as a Python literal would write it."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_endpoint(address: str, port: int) -> str:
    """``addr:port``, an IPv6 address in brackets (``[::1]:80``)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
