"""Junk thrown at every public entry point of the kernel keepalive layer.

Whatever goes in, only the documented exceptions come out: :class:`KeepaliveError`
subclasses, each also a ``ValueError``, ``TypeError`` or ``OSError``; never an
``AttributeError``, ``OverflowError``, ``IndexError``... And a real socket handed junk settings
is left exactly as it was (SO_KEEPALIVE and the four TCP options, read with raw getsockopt).

Inputs that once escaped as undocumented exceptions (numbers beyond float range, fd numbers
beyond a C int, unhashable flags) have explicit regression tests below as well.
"""

from __future__ import annotations

import math
import os
import resource
import socket
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from numbers import Real
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import keepalive
from keepalive import (
    InvalidSetting,
    InvalidSettingType,
    InvalidSocket,
    KeepaliveConfig,
    KeepaliveError,
)

FLOAT_MAX = sys.float_info.max
RAW_OPTIONS: dict[str, tuple[int, int]] = {
    "SO_KEEPALIVE": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    **{
        name: (socket.IPPROTO_TCP, getattr(socket, name))
        for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")
        if hasattr(socket, name)
    },
}
SECONDS_FIELDS = ("idle", "interval", "user_timeout")
FIELDS = (*SECONDS_FIELDS, "count")
junk_settings = settings(
    deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)


# -- junk -----------------------------------------------------------------------------------------


class Opaque:
    """An object of a type nobody expects."""


class FilenoReturns:
    """Has a ``fileno()`` that returns anything."""

    def __init__(self, value: object) -> None:
        self.value = value

    def fileno(self) -> object:
        return self.value

    def __repr__(self) -> str:
        return f"FilenoReturns({self.value!r})"


class FilenoRaises:
    """A ``fileno()`` that raises, like a closed file object's."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def fileno(self) -> int:
        raise self.error

    def __repr__(self) -> str:
        return f"FilenoRaises({self.error!r})"


junk: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.floats(),  # nan, +-inf, negative, zero, subnormal, huge
    st.integers(),
    st.integers(min_value=2**31 - 2, max_value=2**64),
    st.integers(max_value=0),
    st.sampled_from([10**400, -(10**400), 2**63, FLOAT_MAX, -FLOAT_MAX, 5e-324, -0.0]),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.integers(), st.integers()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.complex_numbers(max_magnitude=1e6),
    st.decimals(),
    st.fractions(),
    st.builds(Opaque),
    st.builds(object),
    st.sampled_from([KeepaliveConfig, keepalive, str, Ellipsis, NotImplemented, print]),
)


def beyond_float_range(value: object) -> bool:
    """Numbers float() cannot hold."""
    if isinstance(value, bool) or not isinstance(value, (int, Fraction)):
        return False
    return abs(value) > FLOAT_MAX


# -- helpers --------------------------------------------------------------------------------------


def documented(call: Callable[[], object]) -> tuple[object, KeepaliveError | None]:
    """Run ``call``; a KeepaliveError is returned (and checked), anything else propagates."""
    error: KeepaliveError | None = None
    try:
        return call(), None
    except KeepaliveError as exc:
        error = exc
    assert isinstance(error, (ValueError, TypeError, OSError)), type(error).__mro__
    assert str(error), "an error explains itself"
    return None, error


def snapshot(sock: socket.socket) -> dict[str, int]:
    return {name: sock.getsockopt(level, opt) for name, (level, opt) in RAW_OPTIONS.items()}


@pytest.fixture(scope="module")
def tcp_socket() -> Iterator[socket.socket]:
    """A connected loopback TCP socket with non-default keepalive values, shared by examples."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    with client, server:
        keepalive.configure(client, KeepaliveConfig(idle=123, interval=12, count=3))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        yield client


def assert_success_is_consistent(sock: socket.socket, applied: object) -> None:
    """When junk turned out to be a valid setting, the kernel holds what was reported."""
    assert isinstance(applied, keepalive.ConfigureResult)
    raw = snapshot(sock)
    assert raw["SO_KEEPALIVE"] == 1
    for item in applied:
        assert item.stored is not None
        assert item.stored > 0
        option = item.option
        assert option is not None
        if option in raw:
            scale = 1000 if item.setting == "user_timeout" else 1
            assert raw[option] == item.stored * scale


def is_plain_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


# -- KeepaliveConfig ------------------------------------------------------------------------------


@junk_settings
@given(value=junk)
@pytest.mark.parametrize("field", FIELDS)
def test_config_field_junk(field: str, value: object) -> None:
    cfg, error = documented(lambda: KeepaliveConfig(**{field: value}))
    if error is not None:
        assert isinstance(error, InvalidSetting)
        assert error.field == field
        assert str(error).startswith(f"{field}=")
        if not is_plain_number(value) and not (field == "user_timeout" and value is None):
            assert isinstance(error, InvalidSettingType)
        return
    assert isinstance(cfg, KeepaliveConfig)
    stored = getattr(cfg, field)
    if field == "user_timeout" and value is None:
        assert stored is None
    elif field == "count":
        assert type(stored) is int
        assert stored >= 1
    else:
        assert type(stored) is float
        assert math.isfinite(stored)
        assert stored > 0


@junk_settings
@given(idle=junk, interval=junk, count=junk, user_timeout=junk)
def test_config_positional_junk(
    idle: object, interval: object, count: object, user_timeout: object
) -> None:
    cfg, error = documented(lambda: KeepaliveConfig(idle, interval, count, user_timeout))  # type: ignore[arg-type]
    if error is not None:
        assert isinstance(error, InvalidSetting)
        assert error.field in FIELDS
        return
    assert isinstance(cfg, KeepaliveConfig)
    # derived values of any valid config: a number, or a documented refusal on this platform
    documented(lambda: cfg.detection_bound)
    assert cfg.probing_time >= cfg.idle


@junk_settings
@given(value=junk)
def test_with_user_timeout_junk(value: object) -> None:
    cfg, error = documented(lambda: KeepaliveConfig().with_user_timeout(value))  # type: ignore[arg-type]
    if error is not None:
        assert isinstance(error, InvalidSetting)
        assert error.field == "user_timeout"
        return
    assert isinstance(cfg, KeepaliveConfig)
    expected = KeepaliveConfig().recommended_user_timeout if value is None else float(value)  # type: ignore[arg-type]
    assert cfg.user_timeout == expected


@junk_settings
@given(idle_timeout=junk, count=junk, margin=junk, user_timeout=junk)
@example(idle_timeout=350, count=5, margin=0.2, user_timeout=True)
def test_before_idle_timeout_junk(
    idle_timeout: object, count: object, margin: object, user_timeout: object
) -> None:
    cfg, error = documented(
        lambda: KeepaliveConfig.before_idle_timeout(
            idle_timeout,  # type: ignore[arg-type]
            count=count,  # type: ignore[arg-type]
            margin=margin,  # type: ignore[arg-type]
            user_timeout=user_timeout,  # type: ignore[arg-type]
        )
    )
    if error is not None:
        assert isinstance(error, InvalidSetting)
        assert error.field in ("idle_timeout", "count", "margin", "user_timeout")
        return
    assert isinstance(cfg, KeepaliveConfig)
    assert cfg.idle >= 1
    assert cfg.interval <= cfg.idle


# -- configure / socket_options: settings junk on a real socket -----------------------------------


@junk_settings
@given(cfg=junk)
def test_configure_cfg_junk_leaves_socket_untouched(tcp_socket: socket.socket, cfg: object) -> None:
    before = snapshot(tcp_socket)
    applied, error = documented(lambda: keepalive.configure(tcp_socket, cfg))  # type: ignore[arg-type]
    if error is None:
        assert cfg is None, "only None (meaning the defaults) is accepted besides a config"
        assert_success_is_consistent(tcp_socket, applied)
        tcp_socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        return
    assert isinstance(error, InvalidSettingType)
    assert error.field == "cfg"
    assert snapshot(tcp_socket) == before


@junk_settings
@given(value=junk, with_config=st.booleans(), strict=st.booleans())
@pytest.mark.parametrize("keyword", FIELDS)
def test_configure_keyword_junk_leaves_socket_untouched(
    tcp_socket: socket.socket, keyword: str, value: object, with_config: bool, strict: bool
) -> None:
    cfg = KeepaliveConfig(idle=50, interval=5, count=2) if with_config else None
    before = snapshot(tcp_socket)
    applied, error = documented(
        lambda: keepalive.configure(tcp_socket, cfg, strict=strict, **{keyword: value})
    )
    if error is None:
        assert_success_is_consistent(tcp_socket, applied)
        tcp_socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        return
    assert isinstance(error, InvalidSetting)
    assert error.field == keyword
    assert snapshot(tcp_socket) == before


@junk_settings
@given(strict=junk)
def test_configure_strict_junk(tcp_socket: socket.socket, strict: object) -> None:
    before = snapshot(tcp_socket)
    applied, error = documented(lambda: keepalive.configure(tcp_socket, strict=strict))  # type: ignore[arg-type]
    if error is None:
        assert_success_is_consistent(tcp_socket, applied)
        tcp_socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
    else:
        assert snapshot(tcp_socket) == before


@junk_settings
@given(cfg=junk, keyword=st.sampled_from(FIELDS), value=junk, strict=junk)
def test_socket_options_junk(cfg: object, keyword: str, value: object, strict: object) -> None:
    for args in ((cfg,), ()):
        options, error = documented(
            lambda args=args: keepalive.socket_options(*args, strict=strict, **{keyword: value})  # type: ignore[misc]
        )
        if error is not None:
            assert isinstance(error, InvalidSetting)
            assert error.field in ("cfg", "strict", keyword)
            continue
        assert isinstance(options, list)
        for item in options:
            assert isinstance(item, tuple)
            assert len(item) == 3
            assert all(type(part) is int for part in item)


# -- configure / inspect: socket junk -------------------------------------------------------------


def not_open_fd_numbers() -> st.SearchStrategy[int]:
    """Descriptor numbers that cannot be open here: negative or beyond the open-file limit
    (small numbers could be pytest's own descriptors, which must not be touched)."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return st.integers(max_value=-1) | st.integers(min_value=limit, max_value=2**64)


junk_sockets: st.SearchStrategy[Any] = st.one_of(
    junk.filter(lambda value: not isinstance(value, int) or isinstance(value, bool)),
    not_open_fd_numbers(),
    st.builds(FilenoReturns, junk.filter(lambda v: not isinstance(v, int)) | not_open_fd_numbers()),
    st.builds(FilenoRaises, st.sampled_from([OSError(9, "closed"), ValueError("closed")])),
)


@junk_settings
@given(sock=junk_sockets)
@example(sock=-1)
@example(sock=FilenoReturns(None))
@pytest.mark.parametrize("function", [keepalive.configure, keepalive.inspect])
def test_socket_junk_is_an_invalid_socket(
    function: Callable[[object], object], sock: object
) -> None:
    _, error = documented(lambda: function(sock))
    assert isinstance(error, InvalidSocket), f"{sock!r} was accepted as a socket"
    assert isinstance(error, ValueError)


def test_pipe_and_file_descriptors_are_invalid_sockets(tmp_path: Any) -> None:
    read_end, write_end = os.pipe()
    try:
        with open(tmp_path / "file", "wb") as handle:
            for thing in (read_end, write_end, handle, handle.fileno(), FilenoReturns(read_end)):
                _, error = documented(lambda thing=thing: keepalive.configure(thing))
                assert isinstance(error, InvalidSocket), thing
                _, error = documented(lambda thing=thing: keepalive.inspect(thing))
                assert isinstance(error, InvalidSocket), thing
            handle.write(b"still open")
        os.write(write_end, b"x")
        assert os.read(read_end, 1) == b"x"
    finally:
        os.close(read_end)
        os.close(write_end)


# -- known bugs, one explicit case each -----------------------------------------------------------


def closed_file() -> object:
    """A closed file object: its fileno() raises ValueError."""
    with open(os.devnull, "rb") as handle:
        return handle


@pytest.mark.parametrize(
    "call",
    [
        lambda: KeepaliveConfig(idle=10**400),
        lambda: KeepaliveConfig(user_timeout=Fraction(10**400)),
        lambda: keepalive.socket_options(interval=10**400),
        lambda: KeepaliveConfig.before_idle_timeout(10**400),
        lambda: KeepaliveConfig.before_idle_timeout(350, margin=-(10**400)),
    ],
)
def test_huge_numbers_are_invalid_settings(call: Callable[[], object]) -> None:
    with pytest.raises(InvalidSetting):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: keepalive.socket_options(user_timeout=1e306),
        lambda: KeepaliveConfig(user_timeout=FLOAT_MAX).detection_bound,
    ],
)
def test_huge_user_timeout_is_an_invalid_setting(call: Callable[[], object]) -> None:
    with pytest.raises(InvalidSetting):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: KeepaliveConfig(count=10**400).with_user_timeout(),
        lambda: KeepaliveConfig.before_idle_timeout(350, count=10**400),
    ],
)
def test_huge_count_is_an_invalid_setting(call: Callable[[], object]) -> None:
    with pytest.raises(InvalidSetting):
        call()


@pytest.mark.parametrize("function", [keepalive.configure, keepalive.socket_options])
def test_unhashable_strict_is_a_documented_error(function: Any) -> None:
    args = (socket.socket(),) if function is keepalive.configure else ()
    try:
        with pytest.raises(KeepaliveError):
            function(*args, strict=[])
    finally:
        for sock in args:
            sock.close()


@pytest.mark.parametrize(
    "sock",
    [
        10**30,
        2**31,
        FilenoReturns(2**31),
        FilenoRaises(ValueError("I/O operation on closed file")),
        FilenoRaises(OSError(9, "Bad file descriptor")),
        closed_file(),
    ],
    ids=repr,
)
@pytest.mark.parametrize("function", [keepalive.configure, keepalive.inspect])
def test_bad_fd_numbers_are_invalid_sockets(function: Any, sock: object) -> None:
    with pytest.raises(InvalidSocket):
        function(sock)


@pytest.mark.parametrize("function", [keepalive.configure, keepalive.inspect])
def test_fd_numbers_beyond_a_c_int_do_not_alias_open_sockets(function: Any) -> None:
    with socket.socket() as sock:
        before = snapshot(sock)
        alias = 2**32 + sock.fileno()
        _, error = documented(lambda: function(alias))
        assert snapshot(sock) == before, "the socket at fd % 2**32 was changed"
    assert isinstance(error, InvalidSocket), f"fd {alias} was taken for fd {alias - 2**32}"


@pytest.mark.parametrize("function", [keepalive.configure, keepalive.inspect])
def test_platform_junk_is_a_documented_error(function: Any) -> None:
    with socket.socket() as sock, pytest.raises(InvalidSettingType):
        function(sock, platform="Linux")


def test_decimal_seconds_are_a_type_error_not_a_crash() -> None:
    """Decimal is not a numbers.Real: refused cleanly rather than mixed into float math."""
    with pytest.raises(InvalidSettingType):
        KeepaliveConfig(idle=Decimal("1.5"))  # type: ignore[arg-type]
