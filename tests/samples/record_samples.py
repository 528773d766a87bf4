"""Record the kernel TCP samples that tests/test_diagnostics.py parses.

Run as ``python tests/samples/record_samples.py`` on a Linux machine (loopback only). It makes
TCP sockets in known situations, then writes what the kernel reports about them, keeping only
the rows and messages of its own ports (the loopback pairs of this run):

- ``proc_net_tcp_loopback.txt`` / ``proc_net_tcp6_loopback.txt``: /proc/net/tcp{,6} text;
- ``inet_diag_ipv4.bin`` / ``inet_diag_ipv6.bin``: the raw NETLINK_SOCK_DIAG dump messages
  (host byte order of the recording machine), ending with NLMSG_DONE;
- ``loopback_expected.json``: the ground truth, written from what this script created (never
  from a parser): per ``"localport-remoteport"`` key, the state, the keepalive setting and
  what the test expects.

Situations: ESTABLISHED with SO_KEEPALIVE (TCP_KEEPIDLE 30 s so its timer is recognisable) and
without; CLOSE_WAIT with keepalive; a LISTEN socket; a TIME_WAIT; a sender stuck on a zero
window (retransmit or zero-window-probe timer: keepalive unknown); an IPv6 ::1 pair; and an
IPv4 connection accepted by a dual-stack IPv6 listener (IPv4-mapped addresses in tcp6).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from keepalive.diagnostics._linux import build_inet_diag_request  # noqa: E402

NETLINK_SOCK_DIAG = 4
NLMSG_DONE = 3


def pair(
    listener: socket.socket, family: int = socket.AF_INET
) -> tuple[socket.socket, socket.socket]:
    address = listener.getsockname()[:2]
    client = socket.socket(family, socket.SOCK_STREAM)
    client.connect(address)
    server, _ = listener.accept()
    return client, server


def netlink_dump(family: int, ports: set[int]) -> bytes:
    """The raw dump messages about ``ports``, followed by the NLMSG_DONE message."""
    kept = b""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as channel:
        channel.bind((0, 0))
        channel.sendto(build_inet_diag_request(family), (0, 0))
        while True:
            data = channel.recv(1 << 17)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                message = data[offset : offset + ((length + 3) & ~3)]
                if kind == NLMSG_DONE:
                    return kept + message
                source_port, destination_port = struct.unpack_from(">HH", message, 16 + 4)
                if source_port in ports or destination_port in ports:
                    kept += message
                offset += (length + 3) & ~3


def proc_rows(path: str, ports: set[int]) -> str:
    lines = Path(path).read_text().splitlines()
    kept = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if local_port in ports or remote_port in ports:
            kept.append(line)
    return "\n".join(kept) + "\n"


def main() -> None:
    expected: dict[str, dict[str, object]] = {}
    keep: list[socket.socket] = []

    def note(sock: socket.socket, state: str, keepalive: str, what: str) -> None:
        remote_port = 0 if state == "LISTEN" else sock.getpeername()[1]
        expected[f"{sock.getsockname()[1]}-{remote_port}"] = {
            "family": "ipv6" if sock.family == socket.AF_INET6 else "ipv4",
            "state": state,
            "keepalive": keepalive,
            "what": what,
        }
        keep.append(sock)

    listener = socket.create_server(("127.0.0.1", 0))
    note(listener, "LISTEN", "unknown", "IPv4 listener")

    with_keepalive, accepted_a = pair(listener)
    with_keepalive.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    with_keepalive.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    note(with_keepalive, "ESTABLISHED", "on", "client with SO_KEEPALIVE, TCP_KEEPIDLE=30")
    note(accepted_a, "ESTABLISHED", "off", "accepted side of the keepalive client")

    without, accepted_b = pair(listener)
    note(without, "ESTABLISHED", "off", "client without keepalive")
    note(accepted_b, "ESTABLISHED", "off", "accepted side of the plain client")

    close_wait, closing_peer = pair(listener)
    close_wait.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    close_wait.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    note(close_wait, "CLOSE_WAIT", "on", "peer closed; keepalive on")
    time_wait_port = closing_peer.getsockname()[1]
    closing_peer.close()  # -> FIN_WAIT2 orphan (inode 0) on the accepted side

    # TIME_WAIT: the active closer of a fully closed pair.
    active, passive = pair(listener)
    active_port = active.getsockname()[1]
    active.close()
    time.sleep(0.05)
    passive.close()

    stuck, not_reading = pair(listener)
    not_reading.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    stuck.setblocking(False)
    try:
        while True:
            stuck.send(b"x" * 65536)
    except BlockingIOError:
        pass
    note(stuck, "ESTABLISHED", "unknown", "sender stuck on a zero window, keepalive on")
    note(not_reading, "ESTABLISHED", "off", "receiver that never reads")

    ports = {int(key.split("-")[0]) for key in expected} | {time_wait_port, active_port}
    expected[f"{active_port}-{listener.getsockname()[1]}"] = {
        "family": "ipv4",
        "state": "TIME_WAIT",
        "keepalive": "unknown",
        "what": "active closer, closed (no owner: inode 0)",
    }

    listener6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    note(listener6, "LISTEN", "unknown", "IPv6 listener on ::1")
    client6, accepted6 = pair(listener6, socket.AF_INET6)
    client6.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    note(client6, "ESTABLISHED", "on", "IPv6 client with SO_KEEPALIVE (default idle)")
    note(accepted6, "ESTABLISHED", "off", "IPv6 accepted side")

    dual = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    dual_client = socket.create_connection(("127.0.0.1", dual.getsockname()[1]))
    dual_accepted, _ = dual.accept()
    note(dual_accepted, "ESTABLISHED", "off", "IPv4 client accepted by a dual-stack listener")
    dual_key = f"{dual_accepted.getsockname()[1]}-{dual_client.getsockname()[1]}"
    expected[dual_key]["local_address"] = "::ffff:127.0.0.1"
    keep += [dual, dual_client]
    ports |= {int(key.split("-")[0]) for key in expected}

    time.sleep(1.0)  # let the zero-window sender's timers settle, and give ages a floor
    (HERE / "proc_net_tcp_loopback.txt").write_text(proc_rows("/proc/self/net/tcp", ports))
    (HERE / "proc_net_tcp6_loopback.txt").write_text(proc_rows("/proc/self/net/tcp6", ports))
    (HERE / "inet_diag_ipv4.bin").write_bytes(netlink_dump(socket.AF_INET, ports))
    (HERE / "inet_diag_ipv6.bin").write_bytes(netlink_dump(socket.AF_INET6, ports))
    meta = {
        "byteorder": sys.byteorder,
        "recorded_after_seconds": 1.0,
        "keepidle_seconds": 30,
        "sockets": expected,
    }
    (HERE / "loopback_expected.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    for sock in keep:
        sock.close()


if __name__ == "__main__":
    main()
