"""configure()'s fast path for a config reused across sockets keeps every check of the slow
path: the same values reach the kernel, and wrong or closed sockets are still refused."""

from __future__ import annotations

import errno
import inspect
import socket
import typing

import pytest

import keepalive
import keepalive.sockets
from keepalive.errors import InvalidSocket
from keepalive.platforms import Plan, SetOption

CFG = keepalive.KeepaliveConfig(idle=41, interval=7, count=3, user_timeout=62)
TCP = socket.IPPROTO_TCP


def _pair(family: int = socket.AF_INET) -> tuple[socket.socket, socket.socket, socket.socket]:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    server = socket.create_server((host, 0), family=family)
    client = socket.create_connection(server.getsockname()[:2])
    accepted, _ = server.accept()
    return server, client, accepted


def _stored(sock: socket.socket) -> tuple[int, ...]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(TCP, socket.TCP_KEEPCNT),
        sock.getsockopt(TCP, socket.TCP_USER_TIMEOUT),
    )


def test_repeated_calls_store_the_same_values_on_every_socket() -> None:
    sockets = [_pair() for _ in range(5)]
    try:
        results = [keepalive.configure(client, CFG) for _, client, _ in sockets]
        for _, client, accepted in sockets:
            assert _stored(client) == (1, 41, 7, 3, 62000)
            assert _stored(accepted)[0] == 0  # the other end is untouched
        assert all(result is results[0] for result in results)
    finally:
        for group in sockets:
            for sock in group:
                sock.close()


def test_wrong_and_closed_sockets_are_refused_after_a_success() -> None:
    server, client, accepted = _pair()
    try:
        keepalive.configure(client, CFG)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with udp, pytest.raises(InvalidSocket, match="SOCK_DGRAM"):
            keepalive.configure(udp, CFG)
        closed = socket.create_connection(server.getsockname())
        closed.close()
        with pytest.raises(InvalidSocket, match="closed"):
            keepalive.configure(closed, CFG)
        unix_a, unix_b = socket.socketpair(socket.AF_UNIX)
        with unix_a, unix_b, pytest.raises(InvalidSocket, match="AF_UNIX"):
            keepalive.configure(unix_a, CFG)
    finally:
        for sock in (server, client, accepted):
            sock.close()


def test_another_family_takes_the_checked_path() -> None:
    try:
        v6 = _pair(socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    v4 = _pair()
    try:
        keepalive.configure(v4[1], CFG)
        keepalive.configure(v6[1], CFG)
        keepalive.configure(v4[1], CFG)
        assert _stored(v6[1]) == _stored(v4[1]) == (1, 41, 7, 3, 62000)
    finally:
        for sock in (*v4, *v6):
            sock.close()


def test_a_config_without_user_timeout_takes_the_four_call_path() -> None:
    cfg = keepalive.KeepaliveConfig(idle=33, interval=4, count=2)
    sockets = [_pair() for _ in range(3)]
    try:
        results = [keepalive.configure(client, cfg) for _, client, _ in sockets]
        assert keepalive.sockets._fast[0] is cfg  # the steady state is cached
        for _, client, _ in sockets:
            assert _stored(client)[:4] == (1, 33, 4, 2)
        assert all(result is results[0] for result in results)
    finally:
        for group in sockets:
            for sock in group:
                sock.close()


def test_keywords_and_other_configs_take_the_checked_path() -> None:
    server, client, accepted = _pair()
    try:
        keepalive.configure(client, CFG)
        keepalive.configure(client, CFG, strict=True, count=9)
        assert _stored(client) == (1, 41, 7, 9, 62000)
        assert keepalive.sockets._fast[0] is CFG  # a call with keywords is not cached
        keepalive.configure(client, CFG)
        assert _stored(client) == (1, 41, 7, 3, 62000)
        keepalive.configure(client.fileno(), keepalive.KeepaliveConfig(idle=5))
        assert _stored(client)[:4] == (1, 5, 10, 5)
    finally:
        for sock in (server, client, accepted):
            sock.close()


def test_configure_keeps_its_signature_and_argument_errors() -> None:
    """keepalive.configure is a thin fast path in front of the full function (**options for
    speed): introspection and argument errors are those of configure() itself."""
    parameters = inspect.signature(keepalive.configure).parameters
    assert list(parameters) == [
        "sock",
        "cfg",
        "strict",
        "idle",
        "interval",
        "count",
        "user_timeout",
        "platform",
    ]
    assert all(
        parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in list(parameters)[2:]
    )
    assert keepalive.configure.__name__ == "configure"
    assert "Turn on kernel keepalive" in (keepalive.configure.__doc__ or "")
    assert typing.get_type_hints(keepalive.configure)["return"] is keepalive.Applied
    with socket.socket() as sock:
        with pytest.raises(
            TypeError, match=r"configure\(\) got an unexpected keyword argument 'idel'"
        ):
            keepalive.configure(sock, idel=3)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"configure\(\) takes from 1 to 2 positional"):
            keepalive.configure(sock, CFG, True)  # type: ignore[misc]
        assert keepalive.configure(sock=sock, cfg=CFG).platform == "Linux"


def _plan_ending_with(option: tuple[int, int, int, str], *, length: int) -> Plan:
    """CFG's first ``length - 1`` operations on Linux, then ``option``."""
    real = keepalive.socket_options(CFG)
    names = ["SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT"]
    operations = [SetOption(*args, name) for args, name in zip(real, names, strict=True)]
    return Plan("Linux", (*operations[: length - 1], SetOption(*option)), ())


@pytest.mark.parametrize("length", [1, 4, 5, 6])
def test_a_proven_plan_refused_midway_on_another_socket_names_the_option(
    monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    """The fast path does not read options back first (the plan was proven on a socket of
    this kind); if the kernel refuses one anyway, the error names it and says whether
    anything had been changed. Plans of 4 and 5 calls are unrolled, others looped."""
    server, client, accepted = _pair()
    try:
        plan = _plan_ending_with((TCP, 250, 1, "TCP_OPTION_250"), length=length)  # ENOPROTOOPT
        args = plan.setsockopt_args
        assert args is not None
        assert len(args) == length
        cfg = keepalive.KeepaliveConfig()
        entry = (cfg, client.proto, int(client.family), args, keepalive.Applied("L", ()), plan)
        monkeypatch.setattr(keepalive.sockets, "_fast", entry)
        with pytest.raises(keepalive.SocketOptionError) as caught:
            keepalive.configure(client, cfg)
        assert caught.value.option == "TCP_OPTION_250"
        assert caught.value.errno == errno.ENOPROTOOPT
        assert caught.value.restored is (length == 1)  # nothing was set before it
    finally:
        for sock in (server, client, accepted):
            sock.close()


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5])
def test_every_plan_length_sets_the_planned_options(
    monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    server, client, accepted = _pair()
    try:
        cfg = keepalive.KeepaliveConfig()
        args = tuple(keepalive.socket_options(CFG))[:length]
        plan = Plan("Linux", tuple(SetOption(*call, "x") for call in args), ())
        entry = (cfg, client.proto, int(client.family), args, keepalive.Applied("L", ()), plan)
        monkeypatch.setattr(keepalive.sockets, "_fast", entry)
        assert keepalive.configure(client, cfg).platform == "L"  # the entry's result
        assert [client.getsockopt(level, name) for level, name, _ in args] == [
            value for _, _, value in args
        ]
    finally:
        for sock in (server, client, accepted):
            sock.close()
