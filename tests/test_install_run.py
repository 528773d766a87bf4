"""Zero-code activation: ``python -m keepalive.installer [options] -- COMMAND`` (the function
behind ``python -m keepalive run``) and the KEEPALIVE_INSTALL environment variable, in real
child processes that connect to a listener of this test and report what they read back."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import keepalive.installer as ki

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads Linux's option numbers back"
)

WANTED = {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 37, "TCP_KEEPINTVL": 7, "TCP_KEEPCNT": 4}
OPTIONS = ["--idle", "37", "--interval", "7", "--count", "4", "--user-timeout", "23.5"]

# Connects to the port in argv[1], prints what it reads back as one JSON line, and, given a
# second argument, runs itself again as a child Python process (which inherits everything).
APP = """
import json, os, socket, subprocess, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as sock:
    read = {"SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT"):
        read[name] = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
import keepalive.installer
status = keepalive.installer.installed()
read["source"] = None if status is None else status.source
read["pid"] = os.getpid()
read["marker"] = os.environ.get("SITE_MARKER")
print(json.dumps(read), flush=True)
if len(sys.argv) > 2:
    sys.exit(subprocess.call([sys.executable, __file__, sys.argv[1]]))
"""


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield int(server.getsockname()[1])


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(APP)
    return path


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ if env is None else env)
    environment.pop("KEEPALIVE_INSTALL", None) if env is None else None
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=environment, check=False
    )


def reports(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def picked(report: dict[str, object], names: dict[str, int] = WANTED) -> dict[str, object]:
    return {name: report[name] for name in names}


@pytest.mark.parametrize(
    "entry", [["keepalive", "run"], ["keepalive.installer"]], ids=["keepalive run", "-m installer"]
)
def test_run_installs_in_the_program_and_in_its_child_python(
    listener: int, app: Path, entry: list[str]
) -> None:
    result = run(
        [
            sys.executable,
            "-m",
            *entry,
            *OPTIONS,
            "--loopback",
            "--",
            sys.executable,
            str(app),
            str(listener),
            "spawn",
        ]
    )
    parent, child = reports(result)
    assert picked(parent) == picked(child) == WANTED
    assert parent["TCP_USER_TIMEOUT"] == child["TCP_USER_TIMEOUT"] == 23500
    assert parent["source"] == child["source"] == "KEEPALIVE_INSTALL"
    assert parent["pid"] != child["pid"]


def test_run_replaces_the_runner_process(listener: int, app: Path) -> None:
    code = "import os, sys; print(os.getpid())"
    runner = subprocess.Popen(
        [sys.executable, "-m", "keepalive.installer", "--", sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = runner.communicate(timeout=60)
    assert int(out) == runner.pid  # exec'd: signals reach the program itself


def test_without_loopback_the_program_runs_with_loopback_left_alone(
    listener: int, app: Path
) -> None:
    result = run(
        [
            sys.executable,
            "-m",
            "keepalive.installer",
            *OPTIONS,
            "--",
            sys.executable,
            str(app),
            str(listener),
        ]
    )
    (report,) = reports(result)
    assert report["SO_KEEPALIVE"] == 0
    assert report["source"] == "KEEPALIVE_INSTALL"


def test_the_environment_variable_form(listener: int, app: Path) -> None:
    printed = run(
        [sys.executable, "-m", "keepalive.installer", *OPTIONS, "--loopback", "--print-env"]
    )
    assert printed.returncode == 0, printed.stderr
    env = dict(os.environ)
    for line in printed.stdout.splitlines():  # NAME=value, quoted for a shell
        name, _, value = line.partition("=")
        (env[name],) = shlex.split(value)
    assert set(env) >= {"KEEPALIVE_INSTALL", "PYTHONPATH"}
    assert env["KEEPALIVE_INSTALL"] == (
        "idle=37,interval=7,count=4,user_timeout=23.5; loopback=yes"
    )
    assert env["PYTHONPATH"].split(os.pathsep)[0] == ki.SITE_DIR
    (report,) = reports(run([sys.executable, str(app), str(listener)], env))
    assert picked(report) == WANTED
    assert report["source"] == "KEEPALIVE_INSTALL"
    # written by hand, with several rules: the first match wins
    env["KEEPALIVE_INSTALL"] = f"idle=12,only=*:{listener}; idle=99; loopback=on"
    (report,) = reports(run([sys.executable, str(app), str(listener)], env))
    assert report["TCP_KEEPIDLE"] == 12


def test_a_bad_environment_value_stops_the_program_before_it_starts(
    listener: int, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    env = dict(os.environ, PYTHONPATH=ki.SITE_DIR, KEEPALIVE_INSTALL="idle=60,intreval=5")
    result = run([sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"], env)
    assert result.returncode == 2
    assert not marker.exists()
    assert result.stderr.startswith(
        "keepalive: bad KEEPALIVE_INSTALL='idle=60,intreval=5', the program was not started: "
        "KEEPALIVE_INSTALL='intreval=5' is not allowed"
    )
    assert "unknown key 'intreval'" in result.stderr
    assert "Traceback" not in result.stderr
    env["KEEPALIVE_INSTALL"] = "idle=40000"  # beyond Linux's range: refused at start-up too
    result = run([sys.executable, "-c", "pass"], env)
    assert result.returncode == 2
    assert "TCP_KEEPIDLE" in result.stderr


def test_the_programs_own_sitecustomize_still_runs(
    listener: int, app: Path, tmp_path: Path
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text(
        "import os\nos.environ['SITE_MARKER'] = 'theirs ran'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(theirs))
    result = run(
        [
            sys.executable,
            "-m",
            "keepalive.installer",
            "--idle",
            "37",
            "--loopback",
            "--",
            sys.executable,
            str(app),
            str(listener),
            "spawn",
        ],
        env,
    )
    parent, child = reports(result)
    assert parent["marker"] == child["marker"] == "theirs ran"
    assert parent["TCP_KEEPIDLE"] == child["TCP_KEEPIDLE"] == 37
    check = "import sitecustomize, sys; print(sitecustomize.__file__, ki in sys.path)"
    result = run(
        [
            sys.executable,
            "-m",
            "keepalive.installer",
            "--",
            sys.executable,
            "-c",
            f"ki = {ki.SITE_DIR!r}; {check}",
        ],
        env,
    )
    assert result.stdout.split() == [str(theirs / "sitecustomize.py"), "False"], result.stderr


def test_a_python_without_keepalive_says_so_and_runs(listener: int, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "keepalive"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not here')\n")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([ki.SITE_DIR, str(shadow.parent)]),
        KEEPALIVE_INSTALL="idle=37",
    )
    result = run([sys.executable, "-c", "print('ran')"], env)
    assert result.returncode == 0
    assert result.stdout == "ran\n"
    assert "cannot import keepalive" in result.stderr
    assert "this process runs without it" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "status", "message"),
    [
        (["--idle", "-3", "--", "true"], 2, "idle=-3.0 is not allowed"),
        (["--idle", "x", "--", "true"], 2, "invalid float value"),
        (["--only", "10.0.0.1/8", "--", "true"], 2, "has host bits set"),
        (["--rule", "idle=5,colour=red", "--", "true"], 2, "unknown key 'colour'"),
        (["--rule", "idle=x", "--", "true"], 2, "--rule 'idle=x': idle='x' is not allowed"),
        (["--idle", "40000", "--", "true"], 2, "TCP_KEEPIDLE"),  # what the child would refuse
        (["--idle", "5"], 2, "give the command after '--'"),
        (["--", "/nonexistent/program"], 127, "cannot run '/nonexistent/program'"),
        (["--", "/"], 126, "cannot run '/'"),
    ],
)
def test_bad_invocations(
    arguments: list[str], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # In this process: each fails before anything is run (an exec that fails returns).
    assert ki.run_command(arguments, prog="keepalive run", spawn=False) == status
    assert message in capsys.readouterr().err
    assert ki.installed() is None


def test_bad_invocation_as_a_module() -> None:
    result = run([sys.executable, "-m", "keepalive.installer", "--idle", "-3", "--", "true"])
    assert result.returncode == 2
    assert result.stderr == (
        "python -m keepalive.installer: error: idle=-3.0 is not allowed: expected a finite "
        "number of seconds > 0\n"
    )


def test_run_command_can_spawn_and_return_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    code = textwrap.dedent(
        """
        import os, sys
        sys.exit(3 if os.environ["KEEPALIVE_INSTALL"].startswith("idle=5,") else 4)
        """
    )
    argv = ["--idle", "5", "--", sys.executable, "-c", code]
    assert ki.run_command(argv, spawn=True) == 3
    assert ki.installed() is None  # the runner itself installs nothing
    assert ki.run_command(["--help"]) == 0
    assert "python -m keepalive run" in capsys.readouterr().out


def test_run_environment_puts_the_site_directory_first_once() -> None:
    spec = ki.parse_env("idle=5")
    env = ki.run_environment(spec, {"PYTHONPATH": os.pathsep.join(["/a", ki.SITE_DIR, "/b"])})
    assert env["PYTHONPATH"] == os.pathsep.join([ki.SITE_DIR, "/a", "/b"])
    assert env["KEEPALIVE_INSTALL"] == "idle=5,interval=10,count=5"
    assert ki.run_environment(spec, {})["PYTHONPATH"] == ki.SITE_DIR


def test_the_runner_as_a_subcommand_of_another_parser() -> None:
    """How `keepalive run` plugs into the command-line interface's parser."""
    import argparse
    import io

    parser = argparse.ArgumentParser(prog="keepalive")
    commands = parser.add_subparsers(dest="command")
    ki.add_run_arguments(
        commands.add_parser("run", help=ki.RUN_HELP, description=ki.RUN_DESCRIPTION)
    )
    code = "import os, sys; sys.exit(3 if 'idle=5,' in os.environ['KEEPALIVE_INSTALL'] else 4)"
    for argv in (
        ["run", "--idle", "5", "--", sys.executable, "-c", code],
        ["run", "--idle", "5", sys.executable, "-c", code],  # no "--": all after COMMAND is its
    ):
        assert ki.run_from_args(parser.parse_args(argv), spawn=True) == 3
    out = io.StringIO()
    assert ki.run_from_args(parser.parse_args(["run", "--idle", "5", "--print-env"]), out=out) == 0
    assert out.getvalue().startswith("KEEPALIVE_INSTALL=idle=5,interval=10,count=5\n")
