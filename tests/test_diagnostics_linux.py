"""The Linux kernel's formats (keepalive.diagnostics._linux): /proc/net/tcp, sock_diag and
struct tcp_info on real recorded samples and hand-written edge cases, and the routing tables."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path

import pytest

from keepalive import _tcp_info
from keepalive.diagnostics import _linux
from keepalive.diagnostics._linux import KernelSocket
from keepalive.diagnostics.connections import _report_from_kernel_socket, infer_keepalive

SAMPLES = Path(__file__).parent / "samples"


def _expected() -> dict[str, object]:
    data: dict[str, object] = json.loads((SAMPLES / "loopback_expected.json").read_text())
    return data


def _by_key(sockets: list[KernelSocket]) -> dict[str, KernelSocket]:
    return {f"{s.local_port}-{s.remote_port}": s for s in sockets}


def _sample(name: str) -> str:
    return (SAMPLES / name).read_text()


RECORDED_ORDER = _expected()["byteorder"]
little_endian_samples = pytest.mark.skipif(
    sys.byteorder != RECORDED_ORDER, reason="binary netlink samples are in host byte order"
)


# --- /proc/net/tcp parser on real recorded samples ------------------------------------------


def _recorded_proc() -> dict[str, KernelSocket]:
    order = str(RECORDED_ORDER)
    assert order in ("little", "big")
    sockets = _linux.parse_proc_net_tcp(_sample("proc_net_tcp_loopback.txt"), byteorder=order)  # type: ignore[arg-type]
    sockets += _linux.parse_proc_net_tcp(_sample("proc_net_tcp6_loopback.txt"), byteorder=order)  # type: ignore[arg-type]
    return _by_key(sockets)


def _recorded_diag() -> dict[str, KernelSocket]:
    sockets: list[KernelSocket] = []
    for name in ("inet_diag_ipv4.bin", "inet_diag_ipv6.bin"):
        found, done = _linux.parse_inet_diag_dump((SAMPLES / name).read_bytes())
        assert done, f"{name} must end with NLMSG_DONE"
        sockets += found
    return _by_key(sockets)


@pytest.mark.parametrize("source", ["proc", "sock_diag"])
def test_recorded_samples_match_ground_truth(source: str) -> None:
    if source == "sock_diag" and sys.byteorder != RECORDED_ORDER:
        pytest.skip("binary netlink samples are in host byte order")
    truth = _expected()["sockets"]
    assert isinstance(truth, dict)
    sockets = _recorded_proc() if source == "proc" else _recorded_diag()
    assert set(truth) <= set(sockets), "every socket the recorder made must be parsed"
    for key, want in truth.items():
        got = sockets[key]
        assert got.state == want["state"], key
        assert got.family == want["family"], key
        assert infer_keepalive(got.state, got.timer) == want["keepalive"], (key, got)
        assert got.source == source
        if "local_address" in want:
            assert got.local_address == want["local_address"]
        elif got.family == "ipv4":
            assert got.local_address == "127.0.0.1"
        elif got.state != "LISTEN":
            assert got.local_address == "::1"
        if want["state"] == "TIME_WAIT":
            assert got.inode == 0
            assert got.timer == "time-wait"
        else:
            assert got.inode > 0, key
        if want["keepalive"] == "off":
            assert got.timer == "none"
            assert got.timer_seconds is None
        if want["what"] == "sender stuck on a zero window, keepalive on":
            assert got.timer in ("retransmit", "zero-window-probe")
            assert got.send_queue > 0


def test_recorded_keepalive_timer_counts_down_from_keepidle() -> None:
    meta = _expected()
    truth = meta["sockets"]
    assert isinstance(truth, dict)
    idle = float(meta["keepidle_seconds"])  # type: ignore[arg-type]
    after = float(meta["recorded_after_seconds"])  # type: ignore[arg-type]
    checked = 0
    for sockets in (_recorded_proc(), _recorded_diag()):
        for key, want in truth.items():
            if want["keepalive"] == "on" and "TCP_KEEPIDLE" in want["what"]:
                timer = sockets[key].timer_seconds
                assert timer is not None
                assert idle - after - 1.0 <= timer <= idle - after + 0.05, (key, timer)
                checked += 1
    assert checked == 2


def test_proc_and_sock_diag_agree_on_recorded_sockets() -> None:
    if sys.byteorder != RECORDED_ORDER:
        pytest.skip("binary netlink samples are in host byte order")
    proc, nl = _recorded_proc(), _recorded_diag()
    truth = _expected()["sockets"]
    assert isinstance(truth, dict)
    for key in truth:
        a, b = proc[key], nl[key]
        assert (a.local_address, a.remote_address, a.state, a.timer, a.inode, a.uid) == (
            b.local_address,
            b.remote_address,
            b.state,
            b.timer,
            b.inode,
            b.uid,
        )


@little_endian_samples
def test_recorded_tcp_info_gives_idle_and_a_lower_bound_on_age() -> None:
    after = float(_expected()["recorded_after_seconds"])  # type: ignore[arg-type]
    truth = _expected()["sockets"]
    assert isinstance(truth, dict)
    sockets = _recorded_diag()
    for key, want in truth.items():
        report = _report_from_kernel_socket(sockets[key], pid=None, fd=None, process_name=None)
        if want["state"] in ("ESTABLISHED", "CLOSE_WAIT"):
            assert report.min_age_seconds is not None
            assert report.idle_seconds is not None
            assert report.min_age_seconds >= after - 0.05, key
            assert report.idle_seconds <= report.min_age_seconds
        else:  # listeners report zeros and TIME_WAIT no tcp_info: neither is an age
            assert (report.min_age_seconds, report.idle_seconds) == (None, None), key


# --- tcp_info: one Linux definition, parsed on Linux only ------------------------------------


class _TcpInfoSocket:
    """Answers SO_ERROR with 0 and TCP_INFO with a Linux-shaped blob; records each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, int]] = []

    def getsockopt(self, level: int, optname: int, buflen: int = 0) -> int | bytes:
        self.requests.append((level, optname))
        if optname == getattr(socket, "TCP_INFO", -1) and level == socket.IPPROTO_TCP:
            blob = bytearray(104)
            blob[0], blob[3] = 1, 2  # ESTABLISHED, 2 probes out
            blob[56:60] = (1500).to_bytes(4, sys.byteorder)  # last ACK 1.5 s ago
            return bytes(blob)
        return 0


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="needs socket.TCP_INFO")
def test_demo_reads_tcp_info_on_linux_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from keepalive import demo

    sock = _TcpInfoSocket()
    monkeypatch.setattr(sys, "platform", "linux")
    view = demo.kernel_view(sock)  # type: ignore[arg-type]
    assert (view.established, view.unanswered_probes, view.last_ack_age) == (True, 2, 1.5)
    # FreeBSD and macOS have socket.TCP_INFO too, with another struct layout.
    for other in ("freebsd14", "darwin", "netbsd10"):
        monkeypatch.setattr(sys, "platform", other)
        sock = _TcpInfoSocket()
        view = demo.kernel_view(sock)  # type: ignore[arg-type]
        assert (view.established, view.unanswered_probes, view.last_ack_age) == (None, None, None)
        assert sock.requests == [(socket.SOL_SOCKET, socket.SO_ERROR)], other


@little_endian_samples
def test_audit_parses_tcp_info_on_linux_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    established = [s for s in _recorded_diag().values() if s.state == "ESTABLISHED"]
    assert established
    assert all(s.last_ack_received is not None for s in established)
    monkeypatch.setattr(sys, "platform", "freebsd14")
    elsewhere = [s for s in _recorded_diag().values() if s.state == "ESTABLISHED"]
    assert [(s.last_data_sent, s.last_data_received, s.last_ack_received) for s in elsewhere] == [
        (None, None, None)
    ] * len(elsewhere)


LAYOUT_MARKS = ("_TCPI_", "socket.TCP_INFO", '"TCP_INFO"', 'unpack_from("I"')


def test_tcp_info_layout_is_defined_once() -> None:
    assert _tcp_info.tcp_info_applies("linux")
    assert _tcp_info.tcp_info_applies("android")
    assert not _tcp_info.tcp_info_applies("freebsd14")
    assert not _tcp_info.tcp_info_applies("darwin")
    package = Path(_linux.__file__).resolve().parent.parent
    definition = package / "_tcp_info.py"
    elsewhere = [
        path.relative_to(package)
        for path in package.rglob("*.py")
        if path != definition and any(mark in path.read_text() for mark in LAYOUT_MARKS)
    ]
    assert elsewhere == []


# --- hand-written edge cases ------------------------------------------------------------------


def test_edge_cases_ipv4() -> None:
    rows = _linux.parse_proc_net_tcp(_sample("proc_net_tcp_edge_cases.txt"), byteorder="little")
    by_port = {row.local_port: row for row in rows}
    retransmit = by_port[0xA8CA]
    assert (retransmit.local_address, retransmit.remote_address) == ("10.0.2.15", "203.0.113.5")
    assert retransmit.remote_port == 443
    assert retransmit.timer == "retransmit"
    assert retransmit.retransmits == 3
    assert retransmit.timer_seconds == pytest.approx(0.42)
    assert retransmit.uid == 1000
    assert retransmit.inode == 777
    assert retransmit.send_queue == 16
    assert infer_keepalive(retransmit.state, retransmit.timer) == "unknown"

    zero_window = by_port[0xA8CB]
    assert zero_window.timer == "zero-window-probe"
    assert zero_window.probes_out == 2
    assert infer_keepalive(zero_window.state, zero_window.timer) == "unknown"

    probing = by_port[0xA8CC]
    assert probing.timer == "keepalive"
    assert probing.timer_seconds == pytest.approx(75.0)
    report = _report_from_kernel_socket(probing, pid=7, fd=3, process_name="app")
    assert report.keepalive == "on"
    assert report.keepalive_probes_unanswered == 2
    assert [f.code for f in report.flags] == ["keepalive-probes-unanswered"]

    fin_wait2 = by_port[0xA8CD]
    assert fin_wait2.state == "FIN_WAIT2"
    assert fin_wait2.timer == "keepalive"
    assert infer_keepalive(fin_wait2.state, fin_wait2.timer) == "unknown"

    assert by_port[0xA8CE].state == "SYN_SENT"
    listen = by_port[8080]
    assert listen.state == "LISTEN"
    assert listen.local_address == "0.0.0.0"
    assert infer_keepalive(listen.state, listen.timer) == "unknown"

    time_wait = by_port[0xA8CF]
    assert time_wait.state == "TIME_WAIT"
    assert time_wait.inode == 0
    assert time_wait.timer_seconds == pytest.approx(40.0)

    odd = by_port[0xA8D0]
    assert odd.state == "UNKNOWN(14)"
    assert odd.timer == "unknown(7)"
    assert infer_keepalive(odd.state, odd.timer) == "unknown"

    close_wait = by_port[0xA8D1]
    assert close_wait.state == "CLOSE_WAIT"
    assert infer_keepalive(close_wait.state, close_wait.timer) == "off"


def test_edge_cases_ipv6_and_mapped() -> None:
    rows = _linux.parse_proc_net_tcp(_sample("proc_net_tcp6_edge_cases.txt"), byteorder="little")
    documentation, mapped = rows
    assert documentation.family == "ipv6"
    assert (documentation.local_address, documentation.local_port) == ("2001:db8::1", 443)
    assert (documentation.remote_address, documentation.remote_port) == ("2001:db8::2", 50000)
    assert infer_keepalive(documentation.state, documentation.timer) == "on"
    assert mapped.local_address == "::ffff:10.0.2.15"
    assert mapped.remote_address == "::ffff:203.0.113.5"
    report = _report_from_kernel_socket(mapped, pid=None, fd=None, process_name=None)
    assert report.local == "[::ffff:10.0.2.15]:80"
    assert report.keepalive == "off"


def test_big_endian_rows_decode_to_the_same_addresses() -> None:
    rows = _linux.parse_proc_net_tcp(_sample("proc_net_tcp_bigendian.txt"), byteorder="big")
    assert (rows[0].local_address, rows[0].remote_address) == ("10.0.2.15", "203.0.113.5")
    assert (rows[1].local_address, rows[1].local_port) == ("127.0.0.1", 80)
    little = _linux.parse_proc_net_tcp(_sample("proc_net_tcp_edge_cases.txt"), byteorder="little")
    assert little[0].local_address == rows[0].local_address
    # Read with the wrong byte order the same text means other addresses: the parameter matters.
    wrong = _linux.parse_proc_net_tcp(_sample("proc_net_tcp_bigendian.txt"), byteorder="little")
    assert wrong[0].local_address == "15.2.0.10"


def test_ticks_per_second_scales_the_timer() -> None:
    text = _sample("proc_net_tcp_edge_cases.txt")
    rows = _linux.parse_proc_net_tcp(text, byteorder="little", ticks_per_second=1000)
    assert rows[2].timer_seconds == pytest.approx(7.5)


@pytest.mark.parametrize(
    "line",
    [
        "   0: 0100007F:0050 0100007F:C350 01",  # too few fields
        "   0: 0100007G:0050 0100007F:C350 01 00000000:00000000 00:00000000 0 0 0 1",
        "   0: 01007F:0050 0100007F:C350 01 00000000:00000000 00:00000000 0 0 0 1",
        "   0: 0100007F:0050 0100007F:C350 01 00000000 00:00000000 0 0 0 1",
    ],
)
def test_malformed_rows_raise_with_the_line_number(line: str) -> None:
    text = "  sl  local_address rem_address   st\n" + line + "\n"
    with pytest.raises(ValueError, match="line 2"):
        _linux.parse_proc_net_tcp(text)


# --- netlink framing ---------------------------------------------------------------------------


def test_inet_diag_request_layout() -> None:
    request = _linux.build_inet_diag_request(socket.AF_INET6, sequence=9, byteorder="little")
    assert len(request) == 16 + 56
    assert int.from_bytes(request[0:4], "little") == 72
    assert int.from_bytes(request[4:6], "little") == 20  # SOCK_DIAG_BY_FAMILY
    assert int.from_bytes(request[6:8], "little") == 0x301  # REQUEST | DUMP
    assert int.from_bytes(request[8:12], "little") == 9
    assert request[16] == socket.AF_INET6
    assert request[17] == socket.IPPROTO_TCP
    assert request[18] == 0x2  # INET_DIAG_INFO requested
    assert request[20:24] == b"\xff\xff\xff\xff"  # every state
    assert request[24:] == bytes(48)  # no socket filter
    big = _linux.build_inet_diag_request(socket.AF_INET, byteorder="big")
    assert int.from_bytes(big[0:4], "big") == 72


def _nlmsg(kind: int, body: bytes) -> bytes:
    length = 16 + len(body)
    padded = body + bytes((4 - length % 4) % 4)
    return length.to_bytes(4, "little") + kind.to_bytes(2, "little") + bytes(10) + padded


def test_inet_diag_error_ack_done_and_truncation() -> None:
    error = _nlmsg(2, (-13).to_bytes(4, "little", signed=True) + bytes(16))
    with pytest.raises(OSError, match="sock_diag") as raised:
        _linux.parse_inet_diag_dump(error, byteorder="little")
    assert raised.value.errno == 13
    ack = _nlmsg(2, bytes(20))
    done = _nlmsg(3, bytes(4))
    assert _linux.parse_inet_diag_dump(ack + done, byteorder="little") == ([], True)
    assert _linux.parse_inet_diag_dump(b"", byteorder="little") == ([], False)
    with pytest.raises(ValueError, match="truncated"):
        _linux.parse_inet_diag_dump(done[:-2], byteorder="little")
    short_message = _nlmsg(20, bytes(40))
    with pytest.raises(ValueError, match="truncated"):
        _linux.parse_inet_diag_dump(short_message, byteorder="little")


@little_endian_samples
def test_recorded_netlink_dump_split_at_a_message_boundary_parses_in_parts() -> None:
    data = (SAMPLES / "inet_diag_ipv4.bin").read_bytes()
    length = int.from_bytes(data[0:4], sys.byteorder)
    first, done_first = _linux.parse_inet_diag_dump(data[: (length + 3) & ~3])
    rest, done_rest = _linux.parse_inet_diag_dump(data[(length + 3) & ~3 :])
    whole, _ = _linux.parse_inet_diag_dump(data)
    assert (len(first), done_first, done_rest) == (1, False, True)
    assert first + rest == whole


# --- routing tables -------------------------------------------------------------------------------


def test_route_parsers() -> None:
    route = textwrap.dedent(
        """\
        Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
        eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
        tap0\t00000000\t0202000A\t0003\t0\t0\t600\t00000000\t0\t0\t0
        """
    )
    assert _linux.parse_proc_net_route(route, byteorder="little") == ("192.0.2.1", "10.0.2.2")
    route6 = (
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fd000000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n"
        "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n"
    )
    assert _linux.parse_proc_net_ipv6_route(route6) == ("fd00::1",)
