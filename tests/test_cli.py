"""The command line (keepalive.cli), mostly run as a subprocess: ``python -m keepalive ...``.

Every network test points ``check`` at loopback only (127.0.0.1 / ::1). Names that cannot be
resolved are either refused before any resolver is asked (empty, spaces, IDNA errors) or
resolved inside a private network namespace, where a DNS query cannot leave the machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netns import Namespace, netns_fixture, private_netns  # noqa: F401 - fixture `netns`

import keepalive
from keepalive import cli, diagnostics
from keepalive.cli._arguments import decode_escapes, encode_escapes
from keepalive.cli._output import JSON_SCHEMA_VERSION, UsageError, Writer
from keepalive.cli.audit import render as render_audit
from keepalive.config import KeepaliveConfig
from keepalive.diagnostics._linux import KernelSocket
from keepalive.diagnostics.connections import _report_from_kernel_socket
from keepalive.heartbeat import HeartbeatConfig
from keepalive.platforms import SETTINGS, current
from keepalive.system import system_defaults
from keepalive.testing import EchoServer, FaultProxy

LINUX = sys.platform.startswith("linux")
needs_linux = pytest.mark.skipif(not LINUX, reason="keepalive state per connection needs Linux")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _env(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NO_COLOR", None)
    env.pop("TERM", None)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_cli(
    *args: str, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keepalive", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_fits(text: str) -> None:
    """Readable at 80 columns, no colour codes (output is not a terminal)."""
    assert "\x1b[" not in text
    long = [line for line in text.splitlines() if len(line) > 80]
    assert not long, f"lines over 80 columns: {long}"


def assert_no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert "Traceback" not in done.stdout, done.stdout


def _free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# the entry points


def test_help_lists_every_command() -> None:
    done = run_cli("--help", env=_env(COLUMNS="80"))
    assert done.returncode == 0
    for command in ("info", "doctor", "check", "audit", "demo"):
        assert re.search(rf"^\s+{command}\s", done.stdout, re.MULTILINE), command
    assert_fits(done.stdout)
    for command in ("info", "doctor", "check", "audit", "demo"):
        helped = run_cli(command, "--help", env=_env(COLUMNS="80"))
        assert helped.returncode == 0
        assert helped.stdout.startswith(f"usage: keepalive {command}")
        assert_fits(helped.stdout)


def test_no_command_prints_the_info_summary() -> None:
    bare, explicit = run_cli(), run_cli("info")
    assert bare.returncode == explicit.returncode == 0
    assert bare.stdout == explicit.stdout
    target, defaults = current(), system_defaults()
    for setting in SETTINGS:
        spec = target.options.get(setting)
        if spec is not None:
            assert spec.name in bare.stdout
    flat = " ".join(bare.stdout.split())  # wrapping may split a long source over lines
    for setting in SETTINGS:
        source = defaults.source[setting]
        location = source.split(" (")[0] if not source.startswith("none") else source[6:-1]
        assert location in flat
    assert_fits(bare.stdout)


def test_console_script_is_main() -> None:
    (entry,) = [
        ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "keepalive"
    ]
    assert entry.value == "keepalive.cli:main"
    assert entry.load() is cli.main


def test_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"keepalive {keepalive.__version__}"


def test_importing_the_cli_stays_light() -> None:
    """Every command module is imported to build the parser, so a bare ``keepalive`` pays
    for all of them: what only one command needs is imported when that command runs."""
    heavy = [
        "psutil",
        "asyncio",
        "keepalive.diagnostics",
        "keepalive.demo",
        "keepalive.heartbeat",
        "keepalive.sync",
        "keepalive.testing",
    ]
    code = f"import sys, keepalive.cli; print(sorted(set({heavy!r}) & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == "[]"


def test_the_commands_are_the_registered_modules_in_help_order() -> None:
    names = [command.NAME for command in cli.COMMANDS]
    assert names == ["info", "doctor", "check", "audit", "run", "demo"]
    assert cli.DEFAULT_COMMAND.NAME == "info"
    helped = io.StringIO()
    assert cli.main(["--help"], out=helped) == 0
    listed = re.findall(r"^    (\w+)\s", helped.getvalue(), re.MULTILINE)
    assert listed == names


def test_a_new_command_is_one_module_registered_in_one_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--name", default="world")

    def run(args: argparse.Namespace, out: TextIO) -> int:
        if args.name == "nobody":
            raise UsageError("--name: nobody is not a name")
        out.write(f"hello {args.name}\n")
        return 0

    hello = types.SimpleNamespace(
        NAME="hello", HELP="greet", DESCRIPTION="Greet.", add_arguments=add_arguments, run=run
    )
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, hello))
    out = io.StringIO()
    assert cli.main(["hello", "--name", "you"], out=out) == 0
    assert out.getvalue() == "hello you\n"
    assert cli.main(["hello", "--name", "nobody"], out=io.StringIO()) == 2
    helped = io.StringIO()
    assert cli.main(["--help"], out=helped) == 0
    assert re.search(r"^    hello\s+greet$", helped.getvalue(), re.MULTILINE)


# ---------------------------------------------------------------------------------------------
# doctor

DOCTOR_SECTIONS = {
    "command",
    "schema_version",
    "host",
    "platform",
    "support",
    "system_defaults",
    "default_sources",
    "fresh_socket",
    "network",
    "idle_timeouts",
    "summary",
}


def test_doctor_json_has_every_section() -> None:
    done = run_cli("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == DOCTOR_SECTIONS
    assert (report["command"], report["schema_version"]) == ("doctor", JSON_SCHEMA_VERSION)

    host = report["host"]
    assert host["hostname"] == socket.gethostname()
    assert host["python"]["version"] == ".".join(map(str, sys.version_info[:3]))

    target = current()
    support = {row["setting"]: row for row in report["support"]}
    assert list(support) == list(SETTINGS)
    for setting in SETTINGS:
        spec = target.options.get(setting)
        row = support[setting]
        assert row["supported"] is (spec is not None)
        if spec is not None:
            assert (row["option"], row["unit"], row["range"]) == (
                spec.name,
                spec.unit,
                spec.describe_range(),
            )
        else:
            assert row["reason"]

    defaults = system_defaults()
    by_setting = {row["setting"]: row for row in report["system_defaults"]["settings"]}
    for setting in SETTINGS:
        assert by_setting[setting]["value"] == getattr(defaults, setting)
        assert by_setting[setting]["source"] == defaults.source[setting]
    assert report["system_defaults"]["detection_bound_seconds"] == defaults.detection_bound

    # Where Linux, the BSDs, macOS and Windows keep their defaults.
    locations = {
        source["location"] for entry in report["default_sources"] for source in entry["sources"]
    }
    assert "/proc/sys/net/ipv4/tcp_keepalive_time" in locations
    assert "net.inet.tcp.keepidle" in locations
    assert any(location.endswith("\\KeepAliveTime") for location in locations)
    families = {entry["family"] for entry in report["default_sources"]}
    assert {"linux", "darwin", "windows", "freebsd", "openbsd"} <= families

    fresh = report["fresh_socket"]
    assert fresh["keepalive_enabled"] is False  # measured on a real socket
    assert fresh["error"] is None

    facts = diagnostics.collect_host_facts()
    expected_hints = [hint.kind for hint in diagnostics.network_hints(facts)]
    assert [hint["kind"] for hint in report["network"]["hints"]] == expected_hints
    assert report["network"]["host_facts"]["system"] == facts.system

    idle = report["idle_timeouts"]
    assert idle["system_idle_seconds"] == defaults.idle
    assert len(idle["middleboxes"]) == len(diagnostics.MIDDLEBOX_IDLE_TIMEOUTS)
    warnings = diagnostics.idle_warnings(defaults.idle) if defaults.idle else []
    assert [w["middlebox"]["name"] for w in idle["warnings"]] == [
        w.middlebox.name for w in warnings
    ]
    if any(w.remedy == "keepalive" for w in warnings):
        suggestion = idle["suggestion"]
        cfg = KeepaliveConfig(
            idle=suggestion["idle"],
            interval=suggestion["interval"],
            count=suggestion["count"],
            user_timeout=suggestion["user_timeout"],
        )
        shortest = min(
            w.middlebox.idle_timeout_seconds for w in warnings if w.remedy == "keepalive"
        )
        assert cfg.idle < shortest  # the first probe beats every middlebox warned about
        assert suggestion["code"].startswith("KeepaliveConfig(")
        assert suggestion["detection_bound_seconds"] == cfg.detection_bound
    assert report["summary"]["problems"]  # keepalive is off by default: always worth saying


def test_doctor_text_is_readable_at_80_columns() -> None:
    done = run_cli("doctor")
    assert done.returncode == 0, done.stderr
    assert_fits(done.stdout)
    for heading in (
        "Host",
        "Per-socket settings",
        "System-wide defaults",
        "A fresh TCP socket",
        "Network path",
        "Middlebox idle timeouts",
        "Summary",
    ):
        assert re.search(rf"^{heading}", done.stdout, re.MULTILINE), heading
    assert "OFF" in done.stdout  # SO_KEEPALIVE on a fresh socket
    if system_defaults().idle == 7200:
        assert "Suggested: KeepaliveConfig(idle=60, interval=10, count=5" in done.stdout


# ---------------------------------------------------------------------------------------------
# colour


def _run_in_pty(args: list[str], env: dict[str, str], timeout: float = 30.0) -> str:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return what it wrote."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "keepalive", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    output = _drain(master, process, timeout)
    assert process.wait(timeout) == 0
    return output


def _drain(master: int, process: subprocess.Popen[Any], timeout: float) -> str:
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
    return b"".join(chunks).decode()


@pytest.mark.skipif(not LINUX and sys.platform != "darwin", reason="needs a pty")
def test_colour_only_on_a_terminal_and_never_with_no_color() -> None:
    on_terminal = _run_in_pty(["info"], _env())
    assert ANSI.search(on_terminal)
    assert "\x1b[" not in _run_in_pty(["info"], _env(NO_COLOR="1"))
    assert "\x1b[" not in _run_in_pty(["info"], _env(TERM="dumb"))
    for command in ("info", "doctor"):
        coloured = on_terminal if command == "info" else _run_in_pty([command], _env())
        piped = run_cli(command)
        assert "\x1b[" not in piped.stdout
        # The same text, wrapped the same way, once the colour codes are removed.
        assert ANSI.sub("", coloured).replace("\r\n", "\n") == piped.stdout


# ---------------------------------------------------------------------------------------------
# check

CHECK_KEYS = {
    "command",
    "schema_version",
    "target",
    "platform",
    "connection",
    "keepalive_enabled",
    "settings",
    "detection_bound_seconds",
    "watch",
    "heartbeat",
    "healthy",
    "exit_status",
    "error",
}


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


def test_check_reads_back_the_requested_values_and_measures_rtt(echo_server: EchoServer) -> None:
    host, port = echo_server.address
    requested = {"idle": 7, "interval": 3, "count": 4, "user_timeout": 20}
    options = "--idle=7 --interval=3 --count=4 --user-timeout=20 --ping=PING\\n --pong=PONG\\n"
    timing = "--ping-interval=0.2 --duration=1.2 --json"
    done = run_cli("check", host, str(port), *options.split(), *timing.split())
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert set(result) == CHECK_KEYS
    assert (result["healthy"], result["exit_status"], result["error"]) == (True, 0, None)
    assert result["keepalive_enabled"] is True
    connection = result["connection"]
    assert connection["remote"] == f"{host}:{port}"
    assert connection["attempts"] == 1
    settings = {item["setting"]: item for item in result["settings"]}
    for name, value in requested.items():
        item = settings[name]
        assert item["requested"] == item["stored"] == item["read_back"] == value, item
        assert (item["given"], item["matches"], item["status"]) == (True, True, "honoured")
        if LINUX:
            assert item["read_back_source"] == "socket"
    assert result["detection_bound_seconds"] == KeepaliveConfig(**requested).detection_bound

    heartbeat = result["heartbeat"]
    assert heartbeat["outcome"] == "alive"
    assert heartbeat["pings_sent"] >= 3
    assert heartbeat["pongs_received"] >= heartbeat["pings_sent"] - 1
    rtt = heartbeat["rtt"]
    assert rtt["samples"] >= 2
    assert 0 < rtt["min"] <= rtt["avg"] <= rtt["max"] < 0.5  # loopback
    assert heartbeat["other_bytes_received"] == 0  # every pong was filtered out
    assert 1.1 <= heartbeat["elapsed"] <= 2.5
    assert echo_server.accepted == 1


def test_check_text_output(echo_server: EchoServer) -> None:
    host, port = echo_server.address
    options = "--idle 1.5 --ping PING\\n --pong PONG\\n --ping-interval 0.2 --duration 0.8"
    done = run_cli("check", host, str(port), *options.split())
    assert done.returncode == 0, done.stdout + done.stderr
    assert_fits(done.stdout)
    out = done.stdout
    assert f"keepalive check {host} port {port}" in out
    if LINUX:  # whole seconds: 1.5 s is stored as 2 s, and said so
        assert re.search(r"^  idle\s+1\.5 s\s+2 s\s+2 s\s+TCP_KEEPIDLE\s+rounded$", out, re.M)
        assert re.search(r"^  interval\s+10 s\*\s+10 s\s+10 s\s+TCP_KEEPINTVL\s+ok$", out, re.M)
    assert re.search(r"rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms", out)
    assert out.rstrip().endswith("healthy")
    assert done.stderr == ""


def test_check_pong_defaults_to_the_ping_echoed() -> None:
    with EchoServer(ping=None) as server:  # a pure byte echo
        host, port = server.address
        options = "--ping hb\\x00 --ping-interval 0.2 --duration 0.7 --json"
        done = run_cli("check", host, str(port), *options.split())
    result = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert (result["heartbeat"]["ping"], result["heartbeat"]["pong"]) == ("hb\\0", "hb\\0")
    assert result["heartbeat"]["rtt"]["samples"] >= 1
    assert result["heartbeat"]["other_bytes_received"] == 0


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_check_over_ipv6_loopback() -> None:
    with EchoServer(host="::1") as server:
        port = server.address[1]
        done = run_cli("check", "[::1]", str(port), "--json")
    result = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert result["connection"]["remote"] == f"[::1]:{port}"
    assert result["connection"]["family"] == "ipv6"
    assert result["target"]["host"] == "::1"


def test_check_through_a_frozen_proxy_exits_1_within_the_heartbeat_bound() -> None:
    heartbeat = HeartbeatConfig(interval=0.3, timeout=0.8, misses=2)
    with EchoServer() as server, FaultProxy(server.address) as proxy:
        host, port = proxy.address
        options = (
            f"--ping PING\\n --pong PONG\\n --ping-interval {heartbeat.interval} "
            f"--ping-timeout {heartbeat.timeout} --misses {heartbeat.misses} --duration 30"
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "keepalive", "check", host, str(port), *options.split()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_env(),
        )
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:  # the heartbeat runs once its heading is out
            lines.append(line)
            if line.startswith("Heartbeat for"):
                break
        else:
            pytest.fail("no heartbeat section: " + "".join(lines) + process.communicate()[1])
        time.sleep(0.5)  # a few pongs cross first
        proxy.freeze()  # the server is gone; the proxy's kernel still answers keepalive
        frozen = time.monotonic()
        try:
            rest, errors = process.communicate(timeout=heartbeat.detection_bound + 5)
        finally:
            process.kill()
        elapsed = time.monotonic() - frozen
    output = "".join(lines) + rest
    assert process.returncode == 1, output + errors
    # At least one unanswered ping's full timeout after the freeze, at most the bound + 1 s.
    assert heartbeat.timeout * heartbeat.misses - 0.05 <= elapsed <= heartbeat.detection_bound + 1
    assert "peer declared dead" in output
    assert "Traceback" not in errors
    assert errors == ""  # the library's warning is not printed without -v
    assert_fits(output)


def test_check_refused_connection_exits_1_after_retrying() -> None:
    port = _free_port()
    started = time.monotonic()
    done = run_cli("check", "127.0.0.1", str(port), "--retries", "2", "--json")
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert_no_traceback(done)
    result = json.loads(done.stdout)
    assert result["error"]["kind"] == "connect"
    assert "refused" in result["error"]["message"]
    assert "3 attempts" in result["error"]["message"]
    assert (result["healthy"], result["connection"]) == (False, None)
    assert elapsed >= 0.25 * 0.8 + 0.5 * 0.8  # two backoff pauses (jitter +-20 %)
    assert "cannot connect" in done.stderr


def test_check_refused_connection_text() -> None:
    done = run_cli("check", "127.0.0.1", str(_free_port()), "--retries", "1")
    assert done.returncode == 1
    assert_no_traceback(done)
    assert "attempt 1 failed: connection refused; retrying" in done.stderr
    assert re.search(r"cannot connect to 127\.0\.0\.1 port \d+: connection refused", done.stdout)
    assert_fits(done.stdout)


@pytest.mark.parametrize("host", ["", "bad host name", "x..y", "tab\there"])
def test_check_unresolvable_names_exit_1_without_asking_a_resolver(host: str) -> None:
    # Empty names and names with spaces are refused before getaddrinfo; "x..y" fails in
    # Python's IDNA codec, also before any resolver (checked with strace on this machine).
    done = run_cli("check", host, "80", "--retries", "0")
    assert done.returncode == 1
    assert_no_traceback(done)
    assert "cannot resolve" in done.stdout
    assert "not a valid host name" in done.stdout


@pytest.mark.netns
@pytest.mark.skipif(not LINUX, reason="network namespaces need Linux")
def test_check_a_name_the_resolver_cannot_resolve_exits_1() -> None:
    # In a fresh namespace only loopback exists: a DNS query cannot leave the machine.
    with private_netns(nft=False):
        done = run_cli("check", "no-such-host.invalid", "80", "--retries", "0", "--json")
    assert done.returncode == 1
    assert_no_traceback(done)
    result = json.loads(done.stdout)
    assert result["error"]["kind"] == "resolve"
    assert result["error"]["message"].startswith("cannot resolve 'no-such-host.invalid': ")


@pytest.mark.netns
def test_check_peer_that_never_answers_exits_1_after_the_connect_timeout(
    netns: Namespace,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        netns.black_hole(port)  # the SYNs go unanswered: a host that cannot be reached
        started = time.monotonic()
        done = run_cli(
            "check", "127.0.0.1", str(port), "--connect-timeout", "0.3", "--retries", "1", "--json"
        )
        elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert_no_traceback(done)
    error = json.loads(done.stdout)["error"]
    assert error["kind"] == "connect"
    assert "timed out" in error["message"]
    assert "2 attempts" in error["message"]
    assert 0.6 <= elapsed <= 5


@pytest.mark.netns
def test_check_kernel_keepalive_alone_drops_a_black_holed_peer(netns: Namespace) -> None:
    cfg = KeepaliveConfig(idle=1, interval=1, count=2)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        options = f"--idle {cfg.idle} --interval {cfg.interval} --count {cfg.count} --duration 10"
        command = [sys.executable, "-m", "keepalive", "check", "127.0.0.1", str(port)]
        process = subprocess.Popen(
            [*command, *options.split(), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_env(),
        )
        try:
            accepted, _ = listener.accept()  # connected: the last inbound segment for the client
            connected = time.monotonic()
            netns.black_hole(port)
            out, errors = process.communicate(timeout=cfg.detection_bound + 5)
        finally:
            process.kill()
        elapsed = time.monotonic() - connected
        accepted.close()
    result = json.loads(out)
    assert process.returncode == 1, out + errors
    assert result["watch"]["outcome"] == "error"
    assert "timed out" in result["watch"]["message"]
    assert result["error"]["kind"] == "watch-error"
    assert cfg.detection_bound - 0.3 <= elapsed <= cfg.detection_bound + 1.5


def test_check_kernel_only_watch_reports_a_closed_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def close_soon() -> None:
            conn, _ = listener.accept()
            time.sleep(0.3)
            conn.close()

        closer = threading.Thread(target=close_soon)
        closer.start()
        done = run_cli("check", "127.0.0.1", str(port), "--duration", "5", "--json")
        closer.join()
    result = json.loads(done.stdout)
    assert done.returncode == 1
    assert result["watch"]["outcome"] == "closed"
    assert result["watch"]["elapsed"] < 4
    assert result["error"]["kind"] == "watch-closed"


def test_check_kernel_only_watch_stays_healthy(echo_server: EchoServer) -> None:
    host, port = echo_server.address
    done = run_cli("check", host, str(port), "--duration", "0.4", "--json")
    result = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert result["watch"]["outcome"] == "alive"
    assert 0.35 <= result["watch"]["elapsed"] <= 2


@pytest.mark.skipif(not LINUX and sys.platform != "darwin", reason="needs a pty")
def test_check_shows_a_live_progress_line_on_a_terminal(echo_server: EchoServer) -> None:
    host, port = echo_server.address
    master, slave = pty.openpty()
    options = "--ping PING\\n --pong PONG\\n --ping-interval 0.2 --duration 1 --json"
    process = subprocess.Popen(
        [sys.executable, "-m", "keepalive", "check", host, str(port), *options.split()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=_env(),
    )
    os.close(slave)
    collected: list[str] = []
    reader = threading.Thread(target=lambda: collected.append(_drain(master, process, 30)))
    reader.start()
    stdout, _ = process.communicate(timeout=30)
    reader.join()
    terminal = collected[0]
    assert process.returncode == 0
    assert re.search(r"\r +\d+\.\d/1 s  pings \d+  pongs \d+  rtt [\d.]+ ms", terminal)
    assert terminal.endswith("\r")  # the line is erased at the end
    assert json.loads(stdout)["healthy"] is True  # stdout holds the JSON alone


# ---------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "127.0.0.1", "0"], "port number 1..65535"),
        (["check", "127.0.0.1", "65536"], "port number 1..65535"),
        (["check", "127.0.0.1"], "required: PORT"),
        (["check", "127.0.0.1", "PORT", "--idle", "1"], "port number"),
        (["check", "127.0.0.1", "{port}", "--idle", "0"], "--idle: idle=0.0 is not allowed"),
        (["check", "127.0.0.1", "{port}", "--idle", "abc"], "expected a number of seconds"),
        (["check", "127.0.0.1", "{port}", "--idle", "nan"], "finite"),
        (["check", "127.0.0.1", "{port}", "--count", "2.5"], "expected a whole number"),
        (["check", "127.0.0.1", "{port}", "--count", "0"], "--count: count=0 is not allowed"),
        (["check", "127.0.0.1", "{port}", "--user-timeout", "-1"], "--user-timeout"),
        (["check", "127.0.0.1", "{port}", "--ping", ""], "at least one byte"),
        (["check", "127.0.0.1", "{port}", "--ping", "a\\q"], "unknown escape \\q"),
        (["check", "127.0.0.1", "{port}", "--ping", "a\\"], "lone backslash"),
        (["check", "127.0.0.1", "{port}", "--pong", "x"], "--pong only apply with --ping"),
        (["check", "127.0.0.1", "{port}", "--misses", "3"], "--misses only apply with --ping"),
        (["check", "127.0.0.1", "{port}", "--ping", "p", "--misses", "0"], "--misses"),
        (["check", "127.0.0.1", "{port}", "--ping", "p", "--ping-timeout", "0"], "--ping-timeout"),
        (["check", "127.0.0.1", "{port}", "--duration", "0"], "--duration"),
        (["check", "127.0.0.1", "{port}", "--retries", "-1"], "--retries"),
        (["check", "127.0.0.1", "{port}", "--connect-timeout", "0"], "--connect-timeout"),
        (["audit", "--pid", "abc"], "expected a process id"),
        (["audit", "--pid", "0"], "expected a process id"),
        (["audit", "--pid"], "expected at least one argument"),
        (["doctor", "--bogus"], "unrecognized arguments: --bogus"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    port = str(_free_port())  # nothing listens: a check that got past validation would fail
    done = run_cli(*(arg.replace("{port}", port) for arg in args))
    assert done.returncode == 2, done.stdout + done.stderr
    assert_no_traceback(done)
    assert message in done.stderr
    assert done.stderr.startswith("usage: keepalive")
    assert done.stdout == ""


@pytest.mark.skipif(not LINUX, reason="Linux's TCP_KEEPIDLE range")
def test_out_of_range_for_this_platform_is_a_bad_argument() -> None:
    done = run_cli("check", "127.0.0.1", str(_free_port()), "--idle", "40000")
    assert done.returncode == 2
    assert "--idle: idle=40000.0 is not allowed on Linux: expected 1..32767 s" in done.stderr


# ---------------------------------------------------------------------------------------------
# audit

AUDIT_CHILD = textwrap.dedent(
    """
    import json, socket, sys
    from keepalive import KeepaliveConfig, configure
    port = int(sys.argv[1])
    armed = socket.create_connection(("127.0.0.1", port))
    configure(armed, KeepaliveConfig(idle=30, interval=5, count=3))
    plain = socket.create_connection(("127.0.0.1", port))
    print(json.dumps({"on": armed.getsockname()[1], "off": plain.getsockname()[1]}), flush=True)
    sys.stdin.read()
    """
)


class AuditChild:
    """A child process holding two established connections: one with keepalive, one without."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-c", AUDIT_CHILD, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"child exited with {self.process.wait(5)}")
        self.ports: dict[str, int] = json.loads(line)
        self.accepted = [self.listener.accept()[0] for _ in range(2)]
        self.pid = self.process.pid
        self.listener_port = port

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(5)
        for sock in self.accepted:
            sock.close()
        self.listener.close()


@pytest.fixture
def audit_child() -> Iterator[AuditChild]:
    child = AuditChild()
    try:
        yield child
    finally:
        child.close()


@needs_linux
def test_audit_reports_each_connection_of_a_child_correctly(audit_child: AuditChild) -> None:
    done = run_cli("audit", "--pid", str(audit_child.pid), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["command"], report["pids"]) == ("audit", [audit_child.pid])
    connections = report["connections"]
    assert len(connections) == 2
    by_port = {item["local_port"]: item for item in connections}
    on, off = by_port[audit_child.ports["on"]], by_port[audit_child.ports["off"]]
    for item in (on, off):
        assert item["pid"] == audit_child.pid
        assert item["state"] == "ESTABLISHED"
        assert item["remote"] == f"127.0.0.1:{audit_child.listener_port}"
        assert "python" in (item["process_name"] or "").lower()
    assert on["keepalive"] == "on"
    assert 0 < on["keepalive_timer_seconds"] <= 30
    assert off["keepalive"] == "off"
    assert off["keepalive_timer_seconds"] is None
    summary = report["summary"]
    assert (summary["connections"], summary["processes"]) == (2, 1)
    assert (summary["keepalive_on"], summary["keepalive_off"]) == (1, 1)


@needs_linux
def test_audit_text_shows_the_pid_and_each_state(audit_child: AuditChild) -> None:
    done = run_cli("audit", "--pid", str(audit_child.pid))
    assert done.returncode == 0, done.stderr
    assert_fits(done.stdout)
    assert re.search(rf"^pid {audit_child.pid}  \S+  \(2 connections\)$", done.stdout, re.M)
    on = re.search(rf"127\.0\.0\.1:{audit_child.ports['on']} .* on \d+ s ", done.stdout)
    off = re.search(rf"127\.0\.0\.1:{audit_child.ports['off']} .* off ", done.stdout)
    assert on, done.stdout
    assert off, done.stdout
    assert "1 with keepalive, 1 without" in done.stdout


@needs_linux
def test_audit_of_everything_visible_includes_the_child(audit_child: AuditChild) -> None:
    done = run_cli("audit", "--json")
    assert done.returncode == 0, done.stderr
    mine = [c for c in json.loads(done.stdout)["connections"] if c["pid"] == audit_child.pid]
    assert {c["local_port"]: c["keepalive"] for c in mine} == {
        audit_child.ports["on"]: "on",
        audit_child.ports["off"]: "off",
    }


def test_audit_of_a_missing_process_exits_1() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    done = run_cli("audit", "--pid", str(gone.pid))
    assert done.returncode == 1
    assert_no_traceback(done)
    assert done.stderr.startswith("keepalive audit: ")
    assert str(gone.pid) in done.stderr


def _report(**changes: Any) -> diagnostics.ConnectionReport:
    kernel = KernelSocket(
        family="ipv4",
        local_address="10.0.0.5",
        local_port=43210,
        remote_address="192.0.2.7",
        remote_port=5432,
        state="ESTABLISHED",
        timer="none",
        timer_seconds=None,
        send_queue=0,
        receive_queue=0,
        retransmits=0,
        probes_out=0,
        uid=1000,
        inode=4242,
        source="sock_diag",
        last_data_sent=900.0,
        last_data_received=900.0,
        last_ack_received=900.0,
    )
    from dataclasses import replace

    return _report_from_kernel_socket(
        replace(kernel, **changes), pid=321, fd=7, process_name="worker"
    )


def test_audit_rendering_flags_long_lived_connections_without_keepalive() -> None:
    flagged = _report()
    armed = _report(local_port=43211, timer="keepalive", timer_seconds=42.0)
    assert [flag.code for flag in flagged.flags] == ["no-keepalive-long-lived"]
    result = diagnostics.AuditResult((flagged, armed), "sock_diag")
    out = io.StringIO()
    render_audit(result, [321], Writer(out, colour=False))
    text = out.getvalue()
    assert_fits(text)
    rows = text.splitlines()
    row = next(i for i, line in enumerate(rows) if "10.0.0.5:43210" in line)
    assert re.search(
        r"ESTABLISHED\s+10\.0\.0\.5:43210\s+192\.0\.2\.7:5432\s+off\s+>=15 min", rows[row]
    )
    assert rows[row + 1].startswith("    ! long-lived established connection without keepalive")
    assert re.search(r"10\.0\.0\.5:43211 .* on 42 s", text)
    assert "1 flagged" in text


def test_audit_rendering_of_long_ipv6_addresses_stays_within_80_columns() -> None:
    report = _report(
        family="ipv6",
        local_address="2001:db8:aaaa:bbbb:cccc:dddd:eeee:1",
        remote_address="2001:db8:aaaa:bbbb:cccc:dddd:eeee:2",
    )
    out = io.StringIO()
    render_audit(diagnostics.AuditResult((report,), "sock_diag"), None, Writer(out))
    assert_fits(out.getvalue())
    text = out.getvalue()
    assert "  fd 7  ESTABLISHED  keepalive off  age >=15 min\n" in text
    assert "      local   [2001:db8:aaaa:bbbb:cccc:dddd:eeee:1]:43210\n" in text
    assert "      remote  [2001:db8:aaaa:bbbb:cccc:dddd:eeee:2]:5432\n" in text
    assert "    ! long-lived established connection without keepalive" in text


# ---------------------------------------------------------------------------------------------
# demo


@pytest.mark.parametrize(
    ("detected", "still_established", "healed", "status"),
    [
        (2.1, 9.0, 1.0, 0),
        (None, 9.0, 1.0, 1),
        (2.1, None, 1.0, 1),
        (2.1, 3.0, 1.0, 1),
        (2.1, 9.0, None, 1),
    ],
)
def test_demo_exit_status(
    monkeypatch: pytest.MonkeyPatch,
    detected: float | None,
    still_established: float | None,
    healed: float | None,
    status: int,
) -> None:
    from keepalive import demo

    def fake_run_demo(out: Any) -> demo.DemoResult:
        return demo.DemoResult(detected, still_established, 4.0, 2.0, healed, 3)

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert cli.main(["demo"], out=io.StringIO()) == status


@pytest.mark.slow
def test_demo_runs_the_story_and_exits_0() -> None:
    """The README's main job: the timeline shows the kernel fooled past 3 x its bound, the
    heartbeat's verdict within its bound, and the reconnect once the server is back."""
    start = time.monotonic()
    done = run_cli("demo", timeout=60)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stdout + done.stderr
    assert_no_traceback(done)
    out = done.stdout
    assert elapsed < 20, f"the demo took {elapsed:.1f} s"
    assert all(len(line) <= 80 for line in out.splitlines()), out
    timeline = [line for line in out.splitlines() if line.lstrip().startswith("t=")]
    times = [float(line.split("=")[1].split()[0]) for line in timeline]
    assert times == sorted(times), "the timeline runs forwards"
    assert "PEER DEAD" in out
    assert "blocked recv() raised PeerUnresponsive" in out
    assert "HEALED" in out
    detected = re.search(r"declared the server dead ([0-9.]+) s after it was lost", out)
    kernel = re.search(r"#1 still ESTABLISHED ([0-9.]+) s after the server was lost", out)
    healed = re.search(
        r"reconnected ([0-9.]+) s after the server came back, after\s+(\d+) failed", out
    )
    assert detected, out
    assert kernel, out
    assert healed, out
    assert float(detected.group(1)) <= 2.0 + 0.5  # the heartbeat's bound + tolerance
    assert float(kernel.group(1)) >= 3 * 3.0  # 3 x the kernel's detection bound
    assert int(healed.group(2)) >= 2  # reconnect attempts failed while the server was gone
    kernel_lines = [line for line in timeline if line.split()[3] == "kernel"]
    assert kernel_lines
    assert all("ESTABLISHED" in line for line in kernel_lines)


# ---------------------------------------------------------------------------------------------
# escapes and in-process use


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("PING\\n", b"PING\n"),
        ("*1\\r\\n$4\\r\\nPING\\r\\n", b"*1\r\n$4\r\nPING\r\n"),
        ("\\x00\\xffA\\t\\\\", b"\x00\xffA\t\\"),
        ("\\0", b"\0"),
        ("héllo", "héllo".encode()),
    ],
)
def test_decode_escapes(text: str, data: bytes) -> None:
    assert decode_escapes(text) == data


@given(st.binary())
def test_escapes_round_trip(data: bytes) -> None:
    shown = encode_escapes(data)
    assert shown.isascii()
    assert decode_escapes(shown) == data


def test_main_in_process_writes_to_out() -> None:
    out = io.StringIO()
    assert cli.main(["info"], out=out) == 0
    assert "Per-socket settings" in out.getvalue()
    helped = io.StringIO()
    assert cli.main(["--help"], out=helped) == 0
    assert "usage: keepalive" in helped.getvalue()


# ---------------------------------------------------------------------------------------------
# the documentation: every JSON key documented, and no documented key missing

_KEYS_MARKER = re.compile(r"<!-- json-keys: ([\w.\[\]]+) -->")


def _documented_keys() -> dict[str, set[str]]:
    text = DOCS.read_text(encoding="utf-8")
    tables: dict[str, set[str]] = {}
    for match in _KEYS_MARKER.finditer(text):
        keys: set[str] = set()
        for line in text[match.end() :].lstrip("\n").splitlines():
            if not line.startswith("|"):
                break
            cell = line.split("|")[1].strip()
            key = re.fullmatch(r"`([a-z_0-9]+)`", cell)
            if key:
                keys.add(key.group(1))
        tables[match.group(1)] = keys
    return tables


def _at(data: Any, path: str) -> Any:
    """The object at ``path`` (``root.key.list[].key``); None where a list is empty."""
    for part in path.split(".")[1:]:
        many = part.endswith("[]")
        data = data[part.removesuffix("[]")]
        if many:
            if not data:
                return None  # e.g. no network hints on this host: nothing to compare
            data = data[0]
    return data


def test_json_keys_match_the_documentation(echo_server: EchoServer) -> None:
    tables = _documented_keys()
    host, port = echo_server.address
    options = "--duration 0.3 --ping PING\\n --pong PONG\\n --ping-interval 0.1 --json"
    check = run_cli("check", host, str(port), *options.split())
    watch = run_cli("check", host, str(port), "--duration", "0.2", "--json")
    refused = run_cli("check", "127.0.0.1", str(_free_port()), "--retries", "0", "--json")
    child = AuditChild()
    try:
        audit = run_cli("audit", "--pid", str(child.pid), "--json")
    finally:
        child.close()
    outputs = {
        "doctor": json.loads(run_cli("doctor", "--json").stdout),
        "check": json.loads(check.stdout),
        "check-watch": json.loads(watch.stdout),
        "check-error": json.loads(refused.stdout),
        "audit": json.loads(audit.stdout),
    }
    assert set(tables) >= {"doctor", "check", "audit"}
    compared = set()
    for path, documented in tables.items():
        root = path.split(".")[0]
        actual = _at(outputs[root], path)
        if actual is None:
            continue
        assert isinstance(actual, dict), path
        assert set(actual) == documented, f"{path}: documented {sorted(documented)}"
        compared.add(path)
    assert {"check.settings[]", "check.heartbeat", "audit.connections[]", "doctor.support[]"} <= (
        compared
    )
