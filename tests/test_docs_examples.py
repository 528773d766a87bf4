"""Every ```python block in README.md and docs/**/*.md runs as written.

The blocks of one document run in order in one fresh interpreter and one namespace (a later
block may use what an earlier one defined, as a reader pasting them would), each under a
timeout (``BLOCK_TIMEOUT``). A block fails the test when it raises or hangs. Generic, so that
blocks added or edited later are covered without touching this file:

- **Addresses** are pointed at local servers started here on 127.0.0.1: a line server (greets
  with ``HELLO``, answers ``PING`` with ``PONG``, echoes anything else), an HTTP server, and
  just enough of the Redis and PostgreSQL protocols to connect, ``PING`` and disconnect.
  ``("host", port)`` and ``"host", port`` go to the line server; ``http(s)://host:port`` to the
  HTTP server; ``postgresql://...host:port``, ``port=5432`` and a conninfo ``host=...`` to
  PostgreSQL; ``redis://`` and ``port=6379`` to Redis; any other ``port=N`` to the line server.
  Standard input is a stream of newlines, so ``input()`` returns at once.
- **Blocks that run until interrupted** (a top-level ``while True:`` loop, or a block marked
  ``<!-- run-for: N -->`` on the line before its fence) get ``N`` seconds (``SERVICE_WINDOW``
  for the loops), then a SIGINT, as from Ctrl-C. They pass if nothing went wrong before it and
  they wrote to stdout meanwhile (made progress).
- **Blocks not meant to run** carry ``<!-- not-run: reason -->`` on the line before the fence;
  keep them rare: each must also be listed in ``NOT_RUN`` below.
- A block whose import of a third-party package fails because the package is not installed
  here is skipped, with a warning naming it (grpcio, websockets).
"""

from __future__ import annotations

import ast
import http.server
import json
import os
import re
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK_TIMEOUT = 20.0
SERVICE_WINDOW = 2.0

# Blocks marked <!-- not-run: reason --> in the docs, by document: (path, reason).
NOT_RUN: frozenset[tuple[str, str]] = frozenset()

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="interrupts run-until-stopped blocks with SIGINT"
)

# -- the blocks --------------------------------------------------------------------------------

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.*?)\s*-->")
_RUN_FOR = re.compile(r"<!--\s*run-for:\s*(\d+(?:\.\d+)?)\b.*?-->")


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    line: int  # line of the block's first line of code
    code: str
    not_run: str | None = None
    run_for: float | None = None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks_of(path: Path, root: Path = ROOT) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found: list[Block] = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        not_run = _NOT_RUN.search(before)
        run_for = _RUN_FOR.search(before)
        code = match.group(1)
        found.append(
            Block(
                doc=path.relative_to(root).as_posix(),
                line=text.count("\n", 0, match.start(1)) + 1,
                code=code,
                not_run=not_run.group(1) if not_run else None,
                run_for=float(run_for.group(1)) if run_for else _service_loop_window(code),
            )
        )
    return found


def _service_loop_window(code: str) -> float | None:
    """SERVICE_WINDOW if the block's top level (outside functions) has a ``while True:``."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None  # reported when the block runs

    def endless(statements: list[ast.stmt]) -> bool:
        for statement in statements:
            if isinstance(statement, ast.While) and (
                isinstance(statement.test, ast.Constant) and statement.test.value is True
            ):
                return True
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for field in ("body", "orelse", "finalbody"):
                inner = getattr(statement, field, None)
                if isinstance(inner, list) and endless(inner):
                    return True
        return False

    return SERVICE_WINDOW if endless(tree.body) else None


ALL_BLOCKS = {path.relative_to(ROOT).as_posix(): blocks_of(path) for path in DOCS}
DOCS_WITH_CODE = sorted(doc for doc, found in ALL_BLOCKS.items() if found)

# -- pointing blocks at local servers ------------------------------------------------------------

_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?"
_URL = re.compile(rf"\b(https?|postgres(?:ql)?|redis)://([^/\s\"'@]*@)?({_HOST}):(\d{{1,5}})\b")
_ADDRESS = re.compile(rf"""(["'])({_HOST})\1(\s*,\s*)(\d{{1,5}})\b""")
_PORT_KEYWORD = re.compile(r"\bport=(\d{1,5})\b")
_HOST_KEYWORD = re.compile(rf"""\bhost=(["']?)({_HOST})\1""")


@dataclass(frozen=True)
class Servers:
    line: int
    http: int
    redis: int
    postgres: int

    def by_port(self, port: int) -> int:
        return {5432: self.postgres, 6379: self.redis}.get(port, self.line)


def point_at(code: str, servers: Servers) -> tuple[str, list[str]]:
    """``code`` with its addresses replaced by the local servers', and what was replaced."""
    changes: list[str] = []

    def url(match: re.Match[str]) -> str:
        scheme, user = match.group(1), match.group(2) or ""
        target = {"redis": servers.redis, "http": servers.http, "https": servers.http}.get(
            scheme, servers.postgres
        )
        scheme = "http" if scheme == "https" else scheme  # no TLS on the local server
        replaced = f"{scheme}://{user}127.0.0.1:{target}"
        changes.append(f"{match.group(0)} -> {replaced}")
        return replaced

    def address(match: re.Match[str]) -> str:
        quote, _host, comma, _port = match.groups()
        replaced = f"{quote}127.0.0.1{quote}{comma}{servers.line}"
        changes.append(f"{match.group(0)} -> {replaced}")
        return replaced

    def port_keyword(match: re.Match[str]) -> str:
        replaced = f"port={servers.by_port(int(match.group(1)))}"
        changes.append(f"{match.group(0)} -> {replaced}")
        return replaced

    def host_keyword(match: re.Match[str], add_port: bool) -> str:
        quote = match.group(1)
        replaced = f"host={quote}127.0.0.1{quote}"
        if not quote and add_port:  # a libpq conninfo relying on the default port
            replaced += f" port={servers.postgres}"
        changes.append(f"{match.group(0)} -> {replaced}")
        return replaced

    lines: list[str] = []
    for original in code.splitlines(keepends=True):
        line = _PORT_KEYWORD.sub(port_keyword, _ADDRESS.sub(address, _URL.sub(url, original)))
        add_port = "port=" not in line
        lines.append(_HOST_KEYWORD.sub(lambda match, a=add_port: host_keyword(match, a), line))
    return "".join(lines), changes


# -- the local servers -----------------------------------------------------------------------------


class _LineHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"HELLO\n")
        for line in self.rfile:
            self.wfile.write(b"PONG\n" if line == b"PING\n" else line)


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, body: bool = True) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "3")
        self.end_headers()
        if body:
            self.wfile.write(b"ok\n")

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _resp(value: object, protocol: int) -> bytes:
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        return b"$%d\r\n%s\r\n" % (len(value), value.encode())
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(_resp(item, protocol) for item in value)
    assert isinstance(value, dict)
    pairs = b"".join(_resp(key, protocol) + _resp(item, protocol) for key, item in value.items())
    return (b"%%%d\r\n" % len(value) if protocol == 3 else b"*%d\r\n" % (2 * len(value))) + pairs


class _RedisHandler(socketserver.StreamRequestHandler):
    """RESP2/3: HELLO, PING -> PONG, anything else -> OK (CLIENT SETINFO, SELECT, ...)."""

    def handle(self) -> None:
        while line := self.rfile.readline():
            if line.startswith(b"*"):
                words = []
                for _ in range(int(line[1:])):
                    size = int(self.rfile.readline()[1:])
                    words.append(self.rfile.read(size + 2)[:-2])
            else:
                words = line.split()
            if not words:
                continue
            command = words[0].upper()
            if command == b"HELLO":
                protocol = int(words[1]) if len(words) > 1 else 2
                server = {"server": "redis", "version": "7.2.0", "proto": protocol, "id": 1}
                server.update(mode="standalone", role="master", modules=[])
                self.wfile.write(_resp(server, protocol))
            else:
                self.wfile.write(b"+PONG\r\n" if command == b"PING" else b"+OK\r\n")


def _pg_message(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!I", len(body) + 4) + body


class _PostgresHandler(socketserver.StreamRequestHandler):
    """The PostgreSQL protocol up to ReadyForQuery: trust authentication, no TLS."""

    _PARAMETERS: ClassVar[dict[bytes, bytes]] = {
        b"server_version": b"16.0",
        b"server_encoding": b"UTF8",
        b"client_encoding": b"UTF8",
        b"DateStyle": b"ISO, MDY",
        b"integer_datetimes": b"on",
        b"standard_conforming_strings": b"on",
        b"TimeZone": b"UTC",
    }

    def handle(self) -> None:
        while True:
            head = self.rfile.read(8)
            if len(head) < 8:
                return
            length, code = struct.unpack("!II", head)
            self.rfile.read(length - 8)
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not here
                self.wfile.write(b"N")
                continue
            if code == 80877102:  # CancelRequest
                return
            break
        reply = _pg_message(b"R", struct.pack("!I", 0))  # AuthenticationOk
        for key, value in self._PARAMETERS.items():
            reply += _pg_message(b"S", key + b"\0" + value + b"\0")
        reply += _pg_message(b"K", struct.pack("!II", 4242, 4242))
        self.wfile.write(reply + _pg_message(b"Z", b"I"))
        while (tag := self.rfile.read(1)) and tag != b"X":
            (length,) = struct.unpack("!I", self.rfile.read(4))
            self.rfile.read(length - 4)
            if tag == b"Q":  # simple query: answer as if empty
                self.wfile.write(_pg_message(b"I", b"") + _pg_message(b"Z", b"I"))
            elif tag == b"S":  # Sync
                self.wfile.write(_pg_message(b"Z", b"I"))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients may just hang up
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    handlers: list[type[socketserver.BaseRequestHandler]] = [
        _LineHandler,
        _HttpHandler,
        _RedisHandler,
        _PostgresHandler,
    ]
    running = [_Server(("127.0.0.1", 0), handler) for handler in handlers]
    for server in running:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Servers(*(server.server_address[1] for server in running))
    finally:
        for server in running:
            server.shutdown()
            server.server_close()


# -- the interpreter that runs one document's blocks -----------------------------------------

_HARNESS = r"""
import faulthandler, importlib.util, json, signal, sys, threading, traceback

job = json.load(open(sys.argv[1], encoding="utf-8"))
results = open(sys.argv[2], "a", encoding="utf-8", buffering=1)
report = lambda **record: results.write(json.dumps(record) + "\n")


class Counting:
    def __init__(self, stream):
        self.stream, self.count = stream, 0

    def write(self, text):
        self.count += len(text)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


sys.stdout = Counting(sys.stdout)
window = {"open": False, "fired": False}


def on_sigint(signum, frame):
    if window["open"]:
        window["fired"] = True
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, on_sigint)
main = threading.get_ident()
namespace = {"__name__": "__main__"}


def missing_package(exc):
    top = (exc.name or "").split(".")[0]
    return top and top != "keepalive" and importlib.util.find_spec(top) is None and top


for block in job["blocks"]:
    report(event="begin", index=block["index"])
    faulthandler.dump_traceback_later(block["timeout"], exit=True)
    timer = None
    if block["run_for"]:
        window.update(open=True, fired=False)

        def stop():
            if window["open"]:
                signal.pthread_kill(main, signal.SIGINT)

        timer = threading.Timer(block["run_for"], stop)
        timer.daemon = True
        timer.start()
    written = sys.stdout.count
    outcome, detail = "ok", ""
    try:
        code = compile("\n" * (block["line"] - 1) + block["code"], block["doc"], "exec")
        exec(code, namespace)
    except KeyboardInterrupt:
        if window["fired"]:
            outcome = "interrupted"
        else:
            outcome, detail = "error", traceback.format_exc()
    except ModuleNotFoundError as exc:
        package = missing_package(exc)
        if package:
            outcome, detail = "skipped", f"{package} is not installed"
        else:
            outcome, detail = "error", traceback.format_exc()
    except BaseException:
        outcome, detail = "error", traceback.format_exc()
    finally:
        window["open"] = False
        if timer is not None:
            timer.cancel()
        faulthandler.cancel_dump_traceback_later()
    sys.stdout.flush()
    report(event="end", index=block["index"], outcome=outcome, detail=detail,
           progress=sys.stdout.count > written)

report(event="done")
results.close()
faulthandler.dump_traceback_later(job["exit_timeout"], exit=True)  # a thread left running
"""


def _run_document(doc: str, servers: Servers, tmp_path: Path) -> None:
    blocks = [block for block in ALL_BLOCKS[doc] if block.not_run is None]
    rewritten = [point_at(block.code, servers) for block in blocks]
    job = {
        "exit_timeout": BLOCK_TIMEOUT,
        "blocks": [
            {
                "index": index,
                "doc": str(ROOT / block.doc),
                "line": block.line,
                "code": code,
                "run_for": block.run_for,
                "timeout": BLOCK_TIMEOUT + (block.run_for or 0),
            }
            for index, (block, (code, _)) in enumerate(zip(blocks, rewritten, strict=True))
        ],
    }
    (tmp_path / "job.json").write_text(json.dumps(job), encoding="utf-8")
    (tmp_path / "harness.py").write_text(_HARNESS, encoding="utf-8")
    results = tmp_path / "results.jsonl"
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    budget = sum(item["timeout"] for item in job["blocks"]) + 2 * BLOCK_TIMEOUT
    try:
        process = subprocess.run(
            [sys.executable, "harness.py", "job.json", str(results)],
            input=b"\n" * 1000,
            capture_output=True,
            cwd=tmp_path,
            env=env,
            timeout=budget,
            check=False,
        )
        returncode, output = process.returncode, process.stdout + process.stderr
    except subprocess.TimeoutExpired as expired:
        returncode = None
        output = (expired.stdout or b"") + (expired.stderr or b"")
    records = (
        [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
        if results.exists()
        else []
    )
    ended = {record["index"]: record for record in records if record["event"] == "end"}
    begun = [record["index"] for record in records if record["event"] == "begin"]
    problems: list[str] = []
    skipped: list[str] = []
    for index, block in enumerate(blocks):
        changes = rewritten[index][1]
        replaced = f"\n    addresses replaced: {'; '.join(changes)}" if changes else ""
        record = ended.get(index)
        if record is None:
            if index in begun:
                problems.append(
                    f"{block.where}: no result within {job['blocks'][index]['timeout']:g} s "
                    f"(hangs){replaced}"
                )
            continue
        if record["outcome"] == "error":
            problems.append(f"{block.where}: raised{replaced}\n{record['detail']}")
        elif record["outcome"] == "interrupted" and not record["progress"]:
            problems.append(
                f"{block.where}: still running after {block.run_for:g} s without writing "
                f"anything (stuck?){replaced}"
            )
        elif record["outcome"] == "skipped":
            skipped.append(f"{block.where}: {record['detail']}")
    finished = any(record["event"] == "done" for record in records)
    if not finished and not problems:
        problems.append(f"{doc}: the interpreter died (exit status {returncode})")
    elif finished and returncode != 0:
        problems.append(
            f"{doc}: every block ran, but the interpreter did not exit cleanly (status "
            f"{returncode}): a non-daemon thread left running, or a failure at exit?"
        )
    if skipped:
        warnings.warn(f"{doc}: blocks skipped: {'; '.join(skipped)}", stacklevel=1)
    tail = output.decode("utf-8", "replace")[-4000:]
    assert not problems, "\n\n".join(problems) + f"\n\n--- output (tail) ---\n{tail}"


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS_WITH_CODE)
def test_python_blocks_run(doc: str, servers: Servers, tmp_path: Path) -> None:
    _run_document(doc, servers, tmp_path)


# -- the rules themselves --------------------------------------------------------------------------


def test_not_run_blocks_are_listed() -> None:
    marked = {
        (block.doc, block.not_run)
        for found in ALL_BLOCKS.values()
        for block in found
        if block.not_run is not None
    }
    assert marked == set(NOT_RUN), (
        "blocks marked <!-- not-run: ... --> must be listed in NOT_RUN (and listed ones "
        f"marked): marked {sorted(marked)}, listed {sorted(NOT_RUN)}"
    )


def test_there_are_blocks_to_run() -> None:
    assert {
        "README.md",
        "docs/reconnect.md",
        "docs/recipes/http.md",
        "docs/recipes/databases.md",
    } <= set(DOCS_WITH_CODE)


def test_markers_and_service_loops_are_recognised(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- not-run: needs a cluster -->\n```python\nx = 1\n```\n\n"
        "<!-- run-for: 3 -->\n```python\nserve()\n```\n\n"
        "```python\nwith a() as b:\n    while True:\n        pass\n```\n\n"
        "```python\ndef f():\n    while True:\n        pass\n```\n",
        encoding="utf-8",
    )
    blocks = blocks_of(doc, tmp_path)
    assert [(b.line, b.not_run, b.run_for) for b in blocks] == [
        (3, "needs a cluster", None),
        (8, None, 3.0),
        (12, None, SERVICE_WINDOW),
        (18, None, None),
    ]


def test_addresses_are_pointed_at_the_local_servers() -> None:
    servers = Servers(line=1001, http=1002, redis=1003, postgres=1004)
    cases = {
        'socket.create_connection(("db.internal", 5432))': (
            'socket.create_connection(("127.0.0.1", 1001))'
        ),
        'aio.open_connection(\n        "10.0.0.5", 7000, keepalive=cfg)': (
            'aio.open_connection(\n        "127.0.0.1", 1001, keepalive=cfg)'
        ),
        'pool.request("GET", "http://127.0.0.1:8080/")': (
            'pool.request("GET", "http://127.0.0.1:1002/")'
        ),
        'redis.Redis(host="127.0.0.1", port=6379, **kw)': (
            'redis.Redis(host="127.0.0.1", port=1003, **kw)'
        ),
        'connect(host="db", port=5432, user="app")': (
            'connect(host="127.0.0.1", port=1004, user="app")'
        ),
        'connect(f"host=127.0.0.1 port=5432 dbname=app {x}")': (
            'connect(f"host=127.0.0.1 port=1004 dbname=app {x}")'
        ),
        'make_conninfo("postgresql://app@127.0.0.1:5432/app")': (
            'make_conninfo("postgresql://app@127.0.0.1:1004/app")'
        ),
        'psycopg.connect("host=db.internal dbname=app")': (
            'psycopg.connect("host=127.0.0.1 port=1004 dbname=app")'
        ),
        '("grpc.keepalive_time_ms", 30_000)': '("grpc.keepalive_time_ms", 30_000)',
        'server_hostname="example.com"': 'server_hostname="example.com"',
    }
    for before, after in cases.items():
        assert point_at(before, servers)[0] == after, before


def test_backoff_example_shows_the_exact_values() -> None:
    text = (ROOT / "docs" / "reconnect.md").read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if 'Backoff(jitter="none").delays()' in line)
    expression, _, comment = line.partition("#")
    assert "islice(" in expression
    namespace: dict[str, object] = {}
    exec("from itertools import islice\nfrom keepalive import Backoff", namespace)
    assert eval(expression, namespace) == ast.literal_eval(comment.strip())


def test_local_servers_answer(servers: Servers) -> None:
    with socket.create_connection(("127.0.0.1", servers.line), timeout=5) as sock:
        reader = sock.makefile("rb")
        assert reader.readline() == b"HELLO\n"
        sock.sendall(b"PING\nhi\n")
        assert (reader.readline(), reader.readline()) == (b"PONG\n", b"hi\n")
