"""The benchmarks (benchmarks/heartbeat.py, benchmarks/datapath.py) run, and write the JSON the
docs' charts are drawn from: each script's ``--quick`` smoke run, end to end, with real
responder processes and real sockets, its JSON checked against the agreed schema and its
printed verdicts against the rows. Speed is not judged here (a loaded 2-core machine), only
that every row is measured, printed and written.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
LOOPS = {"asyncio", "uvloop", "trio", None}


def _load_heartbeat() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "keepalive_bench_heartbeat", BENCHMARKS / "heartbeat.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(script: str, json_path: Path, *extra: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--json", str(json_path), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def _check_schema(document: dict[str, Any], benchmark: str, runs: int) -> dict[str, dict[str, Any]]:
    """The agreed schema, field by field; returns the rows by name."""
    assert document["benchmark"] == benchmark
    machine = document["machine"]
    assert isinstance(machine["cpus"], int)
    assert machine["cpus"] >= 1
    assert machine["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert isinstance(machine["platform"], str)
    assert machine["platform"]
    assert document["runs"] == runs
    rows: dict[str, dict[str, Any]] = {}
    for row in document["rows"]:
        for key in ("name", "contender", "baseline"):
            assert isinstance(row[key], str), (key, row)
            assert row[key], (key, row)
        ratio, (low, high) = row["ratio"], row["spread"]
        assert all(
            isinstance(v, float) and math.isfinite(v) and v > 0 for v in (ratio, low, high)
        ), row
        assert low <= ratio <= high, row
        assert row["limit"] is None or (isinstance(row["limit"], float) and row["limit"] > 0), row
        assert row["loop"] in LOOPS, row
        assert row["name"] not in rows, f"row {row['name']!r} twice"
        rows[row["name"]] = row
    for series in document["series"]:
        for key in ("name", "x_label", "y_label"):
            assert isinstance(series[key], str), (key, series)
        assert series["loop"] in LOOPS, series
        xs = [x for x, _y in series["points"]]
        assert xs == sorted(xs), series
        assert all(len(point) == 2 and point[1] > 0 for point in series["points"]), series
    return rows


def _check_printed(stdout: str, rows: dict[str, dict[str, Any]]) -> None:
    """The summary prints every row with its limit and a verdict that follows from them."""
    summary = stdout.split("medians of", 1)[1]
    for name, row in rows.items():
        line = next(line for line in summary.splitlines() if line.strip().startswith(name))
        if row["limit"] is None:
            assert "no goal" in line, line
        else:
            verdict = "PASS" if row["ratio"] <= row["limit"] else "FAIL"
            assert f"limit <= {row['limit']:g}x" in line, line
            assert verdict in line, line


@pytest.mark.slow
def test_heartbeat_quick_run_measures_every_row(tmp_path: Path) -> None:
    path = tmp_path / "bench-heartbeat.json"
    stdout = _run("heartbeat.py", path)
    document = json.loads(path.read_text())
    rows = _check_schema(document, "heartbeat", runs=1)
    expected = {
        "asyncio 200 at 4 Hz": ("asyncio", 1.05),
        "asyncio CPU per beat, 100 to 200": ("asyncio", 1.15),
        "uvloop 200 at 4 Hz": ("uvloop", 1.05),  # uvloop is in the test extra
        "uvloop CPU per beat, 100 to 200": ("uvloop", 1.15),
        "asyncio floor CPU per beat, 100 to 200": ("asyncio", None),
        "uvloop floor CPU per beat, 100 to 200": ("uvloop", None),
        "memory per asyncio monitor": ("asyncio", 1.0),
        "memory per blocking monitor": (None, 1.0),
        "blocking 50 at 4 Hz": (None, None),
    }
    for name, (loop, limit) in expected.items():
        assert name in rows, f"{name!r} missing from {sorted(rows)}"
        assert rows[name]["loop"] == loop
        assert rows[name]["limit"] == limit
    # Memory rows are against the goal in bytes: the ratio is the measured size over it.
    assert rows["memory per asyncio monitor"]["value"] == pytest.approx(
        rows["memory per asyncio monitor"]["ratio"] * 512, rel=1e-3
    )
    if (BENCHMARKS / "_trio_contenders.py").exists():
        trio = [row for row in rows.values() if row["loop"] == "trio"]
        assert trio or any("trio: not measured" in note for note in document["notes"]), stdout
    else:
        assert "trio: not measured (benchmarks/_trio_contenders.py missing)" in stdout
    series = {s["name"]: s for s in document["series"]}
    for loop in ("asyncio", "uvloop"):
        for contender in ("keepalive", "bare-I/O floor"):
            points = series[f"{contender} CPU per beat vs connections ({loop})"]["points"]
            assert [x for x, _y in points] == [100, 200]
    _check_printed(stdout, rows)


def test_datapath_quick_runs_measure_every_row(tmp_path: Path) -> None:
    path = tmp_path / "bench-datapath.json"
    stdout = _run("datapath.py", path, "--runs", "2")
    document = json.loads(path.read_text())
    rows = _check_schema(document, "datapath", runs=2)
    assert rows.keys() == {
        "blocking round trip, 100 B",
        "blocking bulk recv_into, 8 MiB",
        "asyncio round trip, 100 B",
        "asyncio bulk read(65536), 8 MiB",
    }
    assert [rows[name]["limit"] for name in rows] == [1.1, 1.05, 1.05, 1.05]
    assert stdout.count("== run ") == 2
    _check_printed(stdout, rows)


def test_report_takes_medians_and_spreads_over_runs(capsys: pytest.CaptureFixture[str]) -> None:
    heartbeat = _load_heartbeat()
    report = heartbeat.Report("heartbeat")
    for run, ratio in enumerate([1.10, 1.02, 1.30]):
        report.runs = run + 1
        report.row("r", contender="c", baseline="b", limit=1.05, loop="asyncio", ratio=ratio)
        report.row("info", contender="c", baseline="b", limit=None, loop=None, ratio=0.5)
        report.point("s", x_label="x", y_label="y", loop="asyncio", x=2500, y=float(run + 1))
        report.point("s", x_label="x", y_label="y", loop="asyncio", x=1000, y=4.0)
    document = report.as_json()
    assert document["runs"] == 3
    first, info = document["rows"]
    assert (first["ratio"], first["spread"], first["limit"]) == (1.1, [1.02, 1.3], 1.05)
    assert info["limit"] is None
    assert document["series"][0]["points"] == [[1000, 4.0], [2500, 2.0]]
    report.summary()
    printed = capsys.readouterr().out
    assert "1.100x  [1.020-1.300]  limit <= 1.05x  FAIL" in printed
    assert "0.500x  [0.500-0.500]  no goal" in printed
