"""Command-line argument types shared by the commands: numbers, ports, process ids, bytes
with escapes, and the kernel keepalive options (``--idle``, ``--interval``, ``--count``,
``--user-timeout``) with their validation into a ``KeepaliveConfig``."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping

from keepalive._validate import PORT_MAX
from keepalive.cli._output import UsageError
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting
from keepalive.platforms import SETTINGS, current

#: The option that sets each ``KeepaliveConfig`` field, for error messages.
KEEPALIVE_OPTIONS: Mapping[str, str] = {
    "idle": "--idle",
    "interval": "--interval",
    "count": "--count",
    "user_timeout": "--user-timeout",
}

# --- escapes -------------------------------------------------------------------------------------

_ESCAPES = {"\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0"}
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.|$)", re.DOTALL)


def decode_escapes(text: str) -> bytes:
    """Bytes from a command-line token: ``\\n``, ``\\r``, ``\\t``, ``\\0``, ``\\\\`` and
    ``\\xHH`` are escapes; every other character stands for its UTF-8 encoding.

    ``'PING\\n'`` (as typed in a shell, inside single quotes) gives ``b"PING\\n"``. Any other
    backslash sequence raises ValueError naming it, so a typo is never sent as is.
    """
    out = bytearray()
    position = 0
    for match in _ESCAPE.finditer(text):
        out += text[position : match.start()].encode("utf-8")
        code = match.group(1)
        if code.startswith("x") and len(code) == 3:
            out.append(int(code[1:], 16))
        elif code in _ESCAPES:
            out += _ESCAPES[code]
        elif code == "":
            raise ValueError("a lone backslash at the end (write \\\\ for a backslash)")
        else:
            raise ValueError(f"unknown escape \\{code} (use \\n, \\r, \\t, \\0, \\\\ or \\xHH)")
        position = match.end()
    out += text[position:].encode("utf-8")
    return bytes(out)


def encode_escapes(data: bytes) -> str:
    """The inverse of :func:`decode_escapes` for display: printable ASCII as is, the rest
    escaped (``b"PING\\n"`` -> ``PING\\n``)."""
    names = {b"\\"[0]: "\\\\", b"\n"[0]: "\\n", b"\r"[0]: "\\r", b"\t"[0]: "\\t", 0: "\\0"}
    return "".join(
        names.get(byte, chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}") for byte in data
    )


# --- argument types (argparse calls them; ArgumentTypeError becomes a usage error) ---------------


def float_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    return value


def int_arg(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def port_arg(text: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        port = -1
    if not 1 <= port <= PORT_MAX:
        raise argparse.ArgumentTypeError(f"expected a port number 1..{PORT_MAX}, got {text!r}")
    return port


def pid_arg(text: str) -> int:
    try:
        pid = int(text, 10)
    except ValueError:
        pid = 0
    if pid < 1:
        raise argparse.ArgumentTypeError(
            f"expected a process id (a whole number >= 1), got {text!r}"
        )
    return pid


def bytes_arg(text: str) -> bytes:
    try:
        data = decode_escapes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    if not data:
        raise argparse.ArgumentTypeError("expected at least one byte, got an empty string")
    return data


# --- kernel keepalive options --------------------------------------------------------------------


def add_keepalive_options(parser: argparse.ArgumentParser) -> None:
    """``--idle``, ``--interval``, ``--count`` and ``--user-timeout``, in a group of their own;
    :func:`keepalive_config` reads them back."""
    group = parser.add_argument_group("kernel keepalive (defaults: KeepaliveConfig's)")
    group.add_argument("--idle", type=float_arg, metavar="S", help="silence before the first probe")
    group.add_argument("--interval", type=float_arg, metavar="S", help="time between probes")
    group.add_argument("--count", type=int_arg, metavar="N", help="unanswered probes tolerated")
    group.add_argument(
        "--user-timeout",
        dest="user_timeout",
        type=float_arg,
        metavar="S",
        help="longest time sent data may stay unacknowledged",
    )


def keepalive_config(args: argparse.Namespace) -> tuple[KeepaliveConfig, frozenset[str]]:
    """The config the keepalive options ask for, and which settings were given; UsageError
    when a value is out of range, for any OS or for this one."""
    given = frozenset(name for name in SETTINGS if getattr(args, name) is not None)
    try:
        config = KeepaliveConfig(**{name: getattr(args, name) for name in given})
        current().plan(config, strict=False)  # this platform's ranges, before any socket
    except InvalidSetting as error:
        raise setting_error(error) from None
    return config, given


def setting_error(
    error: InvalidSetting, options: Mapping[str, str] = KEEPALIVE_OPTIONS
) -> UsageError:
    """The usage error for a refused setting, named by its option (``--idle: ...``)."""
    return UsageError(f"{options.get(error.field, error.field)}: {error}")
