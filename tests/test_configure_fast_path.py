"""configure()'s steady state, a config reused across sockets, keeps every guarantee of the
checked path without reading the socket's kind: the plan's first call is a TCP-level option
and SO_KEEPALIVE comes last, so a socket that is not TCP refuses the first call before
anything changed, and the checked path then refuses it with its usual error. Every socket is
read back with getsockopt, before and after."""

from __future__ import annotations

import errno
import inspect
import socket
import typing
from collections.abc import Callable, Iterator

import pytest

import keepalive
import keepalive.sockets
from keepalive.errors import InvalidSocket, SocketOptionError
from keepalive.platforms import Plan, SetOption, current

CFG = keepalive.KeepaliveConfig(idle=41, interval=7, count=3, user_timeout=62)
NO_USER_TIMEOUT = keepalive.KeepaliveConfig(idle=43, interval=8, count=4)
TCP = socket.IPPROTO_TCP
SOL = socket.SOL_SOCKET
IPPROTO_MPTCP = 262  # include/uapi/linux/in.h; socket.IPPROTO_MPTCP from Python 3.10 on Linux
READ = {
    "SO_KEEPALIVE": (SOL, socket.SO_KEEPALIVE),
    "TCP_KEEPIDLE": (TCP, socket.TCP_KEEPIDLE),
    "TCP_KEEPINTVL": (TCP, socket.TCP_KEEPINTVL),
    "TCP_KEEPCNT": (TCP, socket.TCP_KEEPCNT),
    "TCP_USER_TIMEOUT": (TCP, socket.TCP_USER_TIMEOUT),
}


@pytest.fixture(autouse=True)
def _own_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with the steady-state entries as they are and leaves them so."""
    for name in ("_fast4", "_fast5", "_checked", "_PLANS", "_PROVEN"):
        value = getattr(keepalive.sockets, name)
        copy = type(value)(value) if isinstance(value, dict | set) else value
        monkeypatch.setattr(keepalive.sockets, name, copy)


def _pair(family: int = socket.AF_INET) -> tuple[socket.socket, socket.socket, socket.socket]:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    server = socket.create_server((host, 0), family=family)
    client = socket.create_connection(server.getsockname()[:2])
    accepted, _ = server.accept()
    return server, client, accepted


def _stored(sock: socket.socket) -> tuple[int, ...]:
    return tuple(sock.getsockopt(level, name) for level, name in READ.values())


def _state(sock: socket.socket) -> dict[str, int | str]:
    """Every keepalive option as the kernel reports it, or the errno name where it refuses."""
    state: dict[str, int | str] = {}
    for option, (level, name) in READ.items():
        try:
            state[option] = sock.getsockopt(level, name)
        except OSError as exc:
            state[option] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return state


def _primed(cfg: keepalive.KeepaliveConfig) -> None:
    """Apply ``cfg`` once to a real TCP socket: its plan becomes the steady state."""
    server, client, accepted = _pair()
    with server, client, accepted:
        keepalive.configure(client, cfg)
    entry = keepalive.sockets._fast5 if cfg.user_timeout else keepalive.sockets._fast4
    assert entry[0] is cfg


# -- the order ---------------------------------------------------------------------------------


def test_the_plan_sets_tcp_options_first_and_so_keepalive_last() -> None:
    assert keepalive.socket_options(NO_USER_TIMEOUT) == [
        (TCP, socket.TCP_KEEPIDLE, 43),
        (TCP, socket.TCP_KEEPINTVL, 8),
        (TCP, socket.TCP_KEEPCNT, 4),
        (SOL, socket.SO_KEEPALIVE, 1),
    ]
    # The user timeout first of all: Linux MPTCP sockets accept the three others (6.10+).
    assert keepalive.socket_options(CFG)[0] == (TCP, socket.TCP_USER_TIMEOUT, 62000)
    assert current().tcp_options_first


class _Recording(socket.socket):
    """A TCP socket that records its setsockopt calls (a subclass, as ssl.SSLSocket is)."""

    calls: list[tuple[int, int, int]]

    def setsockopt(self, *args: typing.Any) -> None:
        self.calls.append(args)  # type: ignore[arg-type]
        super().setsockopt(*args)


@pytest.mark.parametrize("cfg", [CFG, NO_USER_TIMEOUT], ids=["5 calls", "4 calls"])
def test_checked_and_steady_paths_make_the_same_calls_in_the_same_order(
    cfg: keepalive.KeepaliveConfig,
) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    first, second = (_Recording() for _ in range(2))
    with server, first, second:
        for sock in (first, second):
            sock.calls = []
            sock.connect(server.getsockname())
        keepalive.configure(first, cfg)  # checked (not yet cached), then cached
        keepalive.configure(second, cfg)  # the steady state
        assert first.calls == second.calls == keepalive.socket_options(cfg)
        assert _stored(first) == _stored(second)


def test_the_keepalive_timer_starts_with_the_requested_idle() -> None:
    """With SO_KEEPALIVE set last, Linux starts the timer with the new idle (41 s here), not
    the system's two hours; /proc/net/tcp shows the time left in 1/100 s."""

    def timer(sock: socket.socket) -> tuple[int, float]:
        local = "%08X:%04X" % (0x0100007F, sock.getsockname()[1])  # noqa: UP031 - /proc's format
        remote = "%08X:%04X" % (0x0100007F, sock.getpeername()[1])  # noqa: UP031
        with open("/proc/net/tcp", encoding="ascii") as table:
            for line in table:
                fields = line.split()
                if fields[1:3] == [local, remote]:
                    active, when = fields[5].split(":")
                    return int(active, 16), int(when, 16) / 100
        raise AssertionError("socket not in /proc/net/tcp")

    cfg = keepalive.KeepaliveConfig(idle=41, interval=7, count=3)
    pairs = [_pair() for _ in range(2)]
    try:
        for _, client, _ in pairs:  # the checked path, then the steady state
            keepalive.configure(client, cfg)
            active, seconds = timer(client)
            assert active == 2  # the keepalive timer
            assert 35 <= seconds <= 41  # not 7200
    finally:
        for group in pairs:
            for sock in group:
                sock.close()


# -- the steady state --------------------------------------------------------------------------


def test_repeated_calls_store_the_same_values_on_every_socket() -> None:
    sockets = [_pair() for _ in range(5)]
    try:
        results = [keepalive.configure(client, CFG) for _, client, _ in sockets]
        assert keepalive.sockets._fast5[0] is CFG
        for _, client, accepted in sockets:
            assert _stored(client) == (1, 41, 7, 3, 62000)
            assert _stored(accepted)[0] == 0  # the other end is untouched
        assert all(result is results[0] for result in results)
    finally:
        for group in sockets:
            for sock in group:
                sock.close()


def test_a_config_without_user_timeout_takes_the_four_call_path() -> None:
    cfg = keepalive.KeepaliveConfig(idle=33, interval=4, count=2)
    sockets = [_pair() for _ in range(3)]
    try:
        results = [keepalive.configure(client, cfg) for _, client, _ in sockets]
        assert keepalive.sockets._fast4[0] is cfg  # the steady state is cached
        for _, client, _ in sockets:
            assert _stored(client)[:4] == (1, 33, 4, 2)
        assert all(result is results[0] for result in results)
    finally:
        for group in sockets:
            for sock in group:
                sock.close()


def test_ipv4_and_ipv6_share_the_steady_state() -> None:
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


def test_keywords_and_other_configs_take_the_checked_path() -> None:
    server, client, accepted = _pair()
    try:
        keepalive.configure(client, CFG)
        keepalive.configure(client, CFG, strict=True, count=9)
        assert _stored(client) == (1, 41, 7, 9, 62000)
        assert keepalive.sockets._fast5[0] is CFG  # a call with keywords is not cached
        keepalive.configure(client, CFG)
        assert _stored(client) == (1, 41, 7, 3, 62000)
        keepalive.configure(client.fileno(), keepalive.KeepaliveConfig(idle=5))
        assert _stored(client)[:4] == (1, 5, 10, 5)
    finally:
        for sock in (server, client, accepted):
            sock.close()


class _Wrapper:
    """A socket-like object that passes calls on, as asyncio's TransportSocket does."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.family, self.type, self.proto = sock.family, sock.type, sock.proto

    def fileno(self) -> int:
        return self._sock.fileno()

    def setsockopt(self, level: int, optname: int, value: int) -> None:
        self._sock.setsockopt(level, optname, value)

    def getsockopt(self, level: int, optname: int) -> int:
        return self._sock.getsockopt(level, optname)


@pytest.mark.parametrize("cfg", [CFG, NO_USER_TIMEOUT], ids=["5 calls", "4 calls"])
@pytest.mark.parametrize(
    "view",
    [_Wrapper, lambda sock: sock.fileno()],
    ids=["socket-like", "file descriptor"],
)
def test_socket_likes_and_descriptors_are_configured_in_the_steady_state(
    cfg: keepalive.KeepaliveConfig, view: Callable[[socket.socket], object]
) -> None:
    _primed(cfg)
    server, client, accepted = _pair()
    with server, client, accepted:
        applied = keepalive.configure(view(client), cfg)
        assert applied is keepalive.configure(client, cfg)  # the cached result
        assert _stored(client)[:4] == (1, cfg.idle, cfg.interval, cfg.count)


# -- what the steady state refuses, untouched ----------------------------------------------------


def _non_tcp_sockets() -> Iterator[tuple[str, Callable[[], socket.socket], str]]:
    """(label, factory, what the error names)."""
    yield "UDP", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "SOCK_DGRAM"
    yield "UDP6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM), "SOCK_DGRAM"
    yield "Unix stream", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), "AF_UNIX"
    yield "Unix datagram", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM), "AF_UNIX"
    yield (
        "Unix seqpacket",
        lambda: socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET),
        "AF_UNIX",
    )
    yield "socketpair", lambda: socket.socketpair()[0], "AF_UNIX"
    yield "raw TCP", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, TCP), "SOCK_RAW"
    yield "raw TCP6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, TCP), "SOCK_RAW"
    yield "packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0), "AF_PACKET"
    yield "netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0), "AF_NETLINK"
    yield "vsock", lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM), "AF_VSOCK"


NON_TCP = list(_non_tcp_sockets())


@pytest.mark.parametrize("cfg", [CFG, NO_USER_TIMEOUT], ids=["5 calls", "4 calls"])
@pytest.mark.parametrize(("label", "factory", "named"), NON_TCP, ids=[row[0] for row in NON_TCP])
def test_non_tcp_sockets_are_refused_untouched(
    cfg: keepalive.KeepaliveConfig,
    label: str,
    factory: Callable[[], socket.socket],
    named: str,
) -> None:
    _primed(cfg)
    entries = (keepalive.sockets._fast4, keepalive.sockets._fast5)
    try:
        sock = factory()
    except OSError as exc:  # no permission (raw, packet) or no such family in this kernel
        pytest.skip(f"cannot open a {label} socket here: {exc}")
    with sock:
        before = _state(sock)
        with pytest.raises(InvalidSocket, match=named):
            keepalive.configure(sock, cfg)
        assert _state(sock) == before
        assert before["SO_KEEPALIVE"] == 0
    assert (keepalive.sockets._fast4, keepalive.sockets._fast5) == entries  # still cached


def test_sctp_is_refused_untouched() -> None:
    """An SCTP stream socket looks like TCP by family and type; it refuses the first (TCP)
    option, so nothing changes and the error names that option."""
    _primed(CFG)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    except OSError as exc:
        pytest.skip(f"no SCTP here: {exc}")
    with sock:
        before = _state(sock)
        with pytest.raises(SocketOptionError) as raised:
            keepalive.configure(sock, CFG)
        assert raised.value.restored
        assert _state(sock) == before


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def test_mptcp_is_configured_in_full_or_refused_untouched(family: int) -> None:
    """Linux MPTCP sockets take SO_KEEPALIVE, and TCP_KEEPIDLE/INTVL/CNT from 6.10 on, but not
    TCP_USER_TIMEOUT: a plan with a user timeout starts with it, so they refuse it first."""
    try:
        probe = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
    except OSError as exc:
        pytest.skip(f"no MPTCP here: {exc}")
    probe.close()
    for cfg in (CFG, NO_USER_TIMEOUT):
        _primed(cfg)
        with socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP) as sock:
            before = _state(sock)
            refused: SocketOptionError | None = None
            try:
                keepalive.configure(sock, cfg)
            except SocketOptionError as exc:  # a kernel before 6.10, or a user timeout
                refused = exc
            if refused is not None:
                assert refused.restored
                assert _state(sock) == before
                assert cfg is NO_USER_TIMEOUT or refused.option == "TCP_USER_TIMEOUT"
            else:
                assert cfg is NO_USER_TIMEOUT  # no MPTCP kernel takes TCP_USER_TIMEOUT
                after = _state(sock)
                assert after["SO_KEEPALIVE"] == 1
                for option, value in (("TCP_KEEPIDLE", 43), ("TCP_KEEPINTVL", 8)):
                    assert after[option] in (value, before[option])  # read back, if readable


def test_closed_sockets_are_refused_in_the_steady_state() -> None:
    for cfg in (CFG, NO_USER_TIMEOUT):
        _primed(cfg)
        server, client, accepted = _pair()
        client.close()
        with server, accepted, pytest.raises(InvalidSocket, match="closed"):
            keepalive.configure(client, cfg)


@pytest.mark.parametrize("thing", [object(), "socket", 3.5], ids=["object", "str", "float"])
def test_things_without_setsockopt_get_the_checked_paths_error(thing: object) -> None:
    _primed(CFG)
    with pytest.raises(InvalidSocket, match="expected a socket"):
        keepalive.configure(thing, CFG)


# -- failures midway ------------------------------------------------------------------------------


def _plan_with(calls: list[tuple[int, int, int]]) -> Plan:
    names = {args[:2]: name for name, args in READ.items()}
    operations = tuple(
        SetOption(*call, names.get(call[:2], f"TCP_OPTION_{call[1]}")) for call in calls
    )
    return Plan("Linux", operations, ())


def _install(
    monkeypatch: pytest.MonkeyPatch, cfg: keepalive.KeepaliveConfig, plan: Plan
) -> keepalive.ConfigureResult:
    """Make ``plan`` the steady state for ``cfg``, as configure() would after a success."""
    applied = keepalive.ConfigureResult("Linux", ())
    monkeypatch.setitem(keepalive.sockets._PLANS, (current(), cfg, True), (plan, applied))
    # As proven on a socket from create_connection(), whose protocol is IPPROTO_TCP.
    keepalive.sockets._remember(cfg, plan, applied, socket.AF_INET, TCP)
    return applied


BOGUS = (TCP, 250, 1)  # an option Linux does not have: ENOPROTOOPT


@pytest.mark.parametrize("length", [4, 5])
@pytest.mark.parametrize("failing", [1, 2, 3])
def test_a_later_call_refused_names_it_and_says_nothing_was_restored(
    monkeypatch: pytest.MonkeyPatch, length: int, failing: int
) -> None:
    """The steady state does not read the options before setting them: when the kernel
    refuses a later call, the earlier ones stay changed, and the error says so (read back)."""
    calls = [(TCP, socket.TCP_KEEPIDLE, 41), (TCP, socket.TCP_KEEPINTVL, 7)]
    calls += [(TCP, socket.TCP_KEEPCNT, 3), (TCP, socket.TCP_USER_TIMEOUT, 62000)][: length - 3]
    calls.append((SOL, socket.SO_KEEPALIVE, 1))
    calls.insert(failing, BOGUS)
    del calls[failing + 1]
    cfg = keepalive.KeepaliveConfig(idle=41, interval=7, count=3)
    _install(monkeypatch, cfg, _plan_with(calls))
    entry = keepalive.sockets._fast4 if length == 4 else keepalive.sockets._fast5
    assert entry[0] is cfg
    server, client, accepted = _pair()
    with server, client, accepted:
        before = _state(client)
        with pytest.raises(SocketOptionError) as raised:
            keepalive.configure(client, cfg)
        assert raised.value.option == "TCP_OPTION_250"
        assert raised.value.errno == errno.ENOPROTOOPT
        assert raised.value.restored is False
        after = _state(client)
        assert after["TCP_KEEPIDLE"] == 41 != before["TCP_KEEPIDLE"]  # the first call stays
        assert after["SO_KEEPALIVE"] == before["SO_KEEPALIVE"] == 0  # never reached


@pytest.mark.parametrize("length", [4, 5])
def test_a_refused_first_call_changes_nothing_and_says_so(
    monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    calls = [BOGUS, (TCP, socket.TCP_KEEPIDLE, 41), (TCP, socket.TCP_KEEPINTVL, 7)]
    calls += [(TCP, socket.TCP_KEEPCNT, 3)][: length - 4]
    calls.append((SOL, socket.SO_KEEPALIVE, 1))
    cfg = keepalive.KeepaliveConfig(idle=41, interval=7, count=3)
    _install(monkeypatch, cfg, _plan_with(calls))
    server, client, accepted = _pair()
    with server, client, accepted:
        before = _state(client)
        with pytest.raises(SocketOptionError) as raised:
            keepalive.configure(client, cfg)
        assert (raised.value.option, raised.value.restored) == ("TCP_OPTION_250", True)
        assert _state(client) == before


# -- plans that start with SO_KEEPALIVE keep the check -----------------------------------------


def test_plans_are_kept_by_their_first_call_and_length(monkeypatch: pytest.MonkeyPatch) -> None:
    tcp = [(TCP, socket.TCP_KEEPIDLE, 41), (TCP, socket.TCP_KEEPINTVL, 7)]
    on = (SOL, socket.SO_KEEPALIVE, 1)
    for calls, where in [
        ([*tcp, (TCP, socket.TCP_KEEPCNT, 3), on], "_fast4"),
        ([*tcp, (TCP, socket.TCP_KEEPCNT, 3), (TCP, socket.TCP_USER_TIMEOUT, 9), on], "_fast5"),
        ([*tcp, on], "_checked"),  # another length: checked, looped
        ([on, *tcp, (TCP, socket.TCP_KEEPCNT, 3)], "_checked"),  # SO_KEEPALIVE first
    ]:
        cfg = keepalive.KeepaliveConfig(idle=41, interval=7, count=3)
        _install(monkeypatch, cfg, _plan_with(calls))
        assert getattr(keepalive.sockets, where)[0] is cfg


@pytest.mark.parametrize("length", [1, 3, 4, 6])
def test_a_plan_starting_with_so_keepalive_checks_the_socket_first(
    monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    """Such a plan (Windows, Solaris) keeps the check of the socket's kind: SO_KEEPALIVE
    would be accepted by a UDP or Unix socket, which must nevertheless be refused untouched."""
    calls = [
        (SOL, socket.SO_KEEPALIVE, 1),
        (TCP, socket.TCP_KEEPIDLE, 41),
        (TCP, socket.TCP_KEEPINTVL, 7),
        (TCP, socket.TCP_KEEPCNT, 3),
        (TCP, socket.TCP_USER_TIMEOUT, 62000),
        (TCP, socket.TCP_KEEPIDLE, 42),
    ][:length]
    cfg = keepalive.KeepaliveConfig(idle=41, interval=7, count=3)
    applied = _install(monkeypatch, cfg, _plan_with(calls))
    assert keepalive.sockets._checked[0] is cfg
    server, client, accepted = _pair()
    with server, client, accepted:
        assert keepalive.configure(client, cfg) is applied
        expected = {call[:2]: call[2] for call in calls}  # the last value set wins
        assert {key: client.getsockopt(*key) for key in expected} == expected
    for label, factory, named in NON_TCP[:6]:  # UDP, Unix: SO_KEEPALIVE alone would pass
        with factory() as sock:
            with pytest.raises(InvalidSocket, match=named):
                keepalive.configure(sock, cfg)
            assert sock.getsockopt(SOL, socket.SO_KEEPALIVE) == 0, label


def test_a_checked_plan_refused_midway_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [(SOL, socket.SO_KEEPALIVE, 1), (TCP, socket.TCP_KEEPIDLE, 41), BOGUS]
    cfg = keepalive.KeepaliveConfig(idle=41, interval=7, count=3)
    _install(monkeypatch, cfg, _plan_with(calls))
    server, client, accepted = _pair()
    with server, client, accepted:
        with pytest.raises(SocketOptionError) as raised:
            keepalive.configure(client, cfg)
        assert (raised.value.option, raised.value.restored) == ("TCP_OPTION_250", False)
        assert client.getsockopt(SOL, socket.SO_KEEPALIVE) == 1  # changed, and said so


# -- the function itself ------------------------------------------------------------------------


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
    assert typing.get_type_hints(keepalive.configure)["return"] is keepalive.ConfigureResult
    _primed(CFG)
    with socket.socket() as sock:
        with pytest.raises(
            TypeError, match=r"configure\(\) got an unexpected keyword argument 'idel'"
        ):
            keepalive.configure(sock, idel=3)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"configure\(\) takes from 1 to 2 positional"):
            keepalive.configure(sock, CFG, True)  # type: ignore[misc]
        assert keepalive.configure(sock=sock, cfg=CFG).platform == "Linux"
        assert _stored(sock) == (1, 41, 7, 3, 62000)


KEYWORDS: list[dict[str, object]] = [
    {},
    {"strict": True},
    {"strict": False},
    {"strict": None},
    {"strict": 1},
    {"idle": None},
    {"idle": None, "interval": None, "count": None, "user_timeout": None, "platform": None},
    {"idle": 12},
    {"count": 9, "strict": True},
    {"user_timeout": 0.5},
    {"platform": None, "strict": False},
    {"idle": "12"},
    {"count": -1},
]


@pytest.mark.parametrize("cfg", [CFG, NO_USER_TIMEOUT, None], ids=["5 calls", "4 calls", "None"])
@pytest.mark.parametrize("keywords", KEYWORDS, ids=[repr(k) for k in KEYWORDS])
def test_every_keyword_means_to_the_steady_state_what_it_means_to_configure(
    cfg: keepalive.KeepaliveConfig | None, keywords: dict[str, object]
) -> None:
    """keepalive.configure takes its keywords as plain parameters (for speed): whatever is
    passed, the outcome is the checked function's, and the socket ends up the same."""
    if cfg is not None:
        _primed(cfg)
    outcomes = []
    for function in (keepalive.configure, keepalive.sockets._configure):
        server, client, accepted = _pair()
        with server, client, accepted:
            try:
                result: object = function(client, cfg, **keywords)  # type: ignore[arg-type]
            except Exception as exc:  # compared below
                result = (type(exc), str(exc))
            outcomes.append((result, _stored(client)))
    assert outcomes[0] == outcomes[1]


def test_positional_misuse_is_refused_as_configure_does() -> None:
    _primed(CFG)
    with socket.socket() as sock:
        for extra in [(True,), (None,), (True, 5)]:
            with pytest.raises(TypeError, match=r"configure\(\) takes from 1 to 2 positional"):
                keepalive.configure(sock, CFG, *extra)  # type: ignore[misc]
        assert _state(sock)["SO_KEEPALIVE"] == 0
