"""The documentation's pictures (scripts/draw_pictures.py): committed, fresh, drawn from real runs.

Each committed SVG under docs/images/ is redrawn in memory from its committed input and must
be identical: a picture whose input changed without a redraw fails here. The inputs are real
runs: ``keepalive demo --record`` (run here for real once), the fault report's chart data
(scripts/fault_report.py's ``chart_data``), the benchmarks' JSON (drawn here from a file in
the agreed schema written to a temporary directory).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
DATA = ROOT / "docs" / "data"
SVG = "{http://www.w3.org/2000/svg}"
REQUIRED = ("nat-timeline.svg", "fault-detection.svg", "layers.svg")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pictures() -> ModuleType:
    return _load("draw_pictures")


@pytest.fixture(scope="module")
def fault_report() -> ModuleType:
    return _load("fault_report")


def _texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # also: the SVG is well-formed XML
    assert root.tag == f"{SVG}svg"
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


# -- the committed pictures --------------------------------------------------------------------


def test_committed_pictures_are_fresh(pictures: ModuleType) -> None:
    stale = []
    for picture in pictures.PICTURES:
        if not pictures.drawable(picture):
            assert not picture.required, f"{picture.output.name}: its input is not committed"
            continue
        assert picture.output.is_file(), f"{picture.output.name} is not committed"
        if pictures.render(picture) != picture.output.read_text(encoding="utf-8"):
            stale.append(picture.output.name)
    assert not stale, f"stale: {stale}; run python3 scripts/draw_pictures.py"
    for name in REQUIRED:
        assert (IMAGES / name).is_file(), name


def test_check_mode_passes_on_the_committed_pictures(pictures: ModuleType) -> None:
    assert pictures.main(["--check"]) == 0


def test_drawing_is_deterministic(pictures: ModuleType) -> None:
    for picture in pictures.PICTURES:
        if pictures.drawable(picture):
            assert pictures.render(picture) == pictures.render(picture), picture.output.name


def test_a_changed_input_changes_the_picture(pictures: ModuleType) -> None:
    """The freshness check can only catch staleness if the drawing depends on the data."""
    recording = json.loads((DATA / "demo-events.json").read_text(encoding="utf-8"))
    changed = copy.deepcopy(recording)
    lost = next(event for event in changed["events"] if event["kind"] == "server_lost")
    lost["at"] += 0.5
    assert pictures.draw_timeline(changed) != pictures.draw_timeline(recording)
    report = json.loads((DATA / "fault-report.json").read_text(encoding="utf-8"))
    changed = copy.deepcopy(report)
    changed["scenarios"][0]["cells"][0]["median"] += 1
    assert pictures.draw_fault_detection(changed) != pictures.draw_fault_detection(report)


# -- the NAT timeline, from a real demo run -----------------------------------------------------


def test_committed_recording_tells_the_story(pictures: ModuleType) -> None:
    """docs/data/demo-events.json is a real run in which the story played out, in order."""
    recording = json.loads((DATA / "demo-events.json").read_text(encoding="utf-8"))
    assert recording["result"]["played_out"] is True
    story = pictures.read_story(recording)
    times = [event["at"] for event in recording["events"]]
    assert times == sorted(times)
    lost, dead = story.first("server_lost"), story.first("heartbeat_dead")
    back, healed = story.first("server_back"), story.first("healed")
    assert lost < dead <= lost + story.heartbeat_bound + 0.5 < back <= healed
    # the kernel stayed ESTABLISHED, probes answered, past its own detection bound
    late = [
        event
        for event in story.all("kernel")
        if event["at"] > lost + story.kernel_bound and event["details"]["established"]
    ]
    assert late
    assert all(event["details"]["unanswered_probes"] == 0 for event in late)
    assert story.all("retry_failed")
    texts = " ".join(_texts(pictures.draw_timeline(recording)))
    assert "PEER DEAD" in texts
    assert "HEALED" in texts
    assert "still ESTABLISHED" in texts


@pytest.mark.slow
def test_demo_records_a_drawable_timeline(tmp_path: Path, pictures: ModuleType) -> None:
    """``keepalive demo --record`` for real: the JSON has every step of the story, and the
    timeline is drawn from it."""
    path = tmp_path / "events.json"
    done = subprocess.run(
        [sys.executable, "-m", "keepalive", "demo", "--record", str(path)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    recording = json.loads(path.read_text(encoding="utf-8"))
    kinds = [event["kind"] for event in recording["events"]]
    for kind in ("connected", "server_lost", "kernel", "heartbeat_dead", "retry_wait"):
        assert kind in kinds, kind
    assert kinds.index("server_lost") < kinds.index("heartbeat_dead") < kinds.index("healed")
    assert recording["result"]["played_out"] is True
    assert recording["kernel"]["detection_bound"] == 3
    assert f"recorded {len(kinds)} events to {path}" in done.stdout
    svg = pictures.draw_timeline(recording)
    assert "PEER DEAD" in " ".join(_texts(svg))


def test_demo_refuses_a_record_path_it_cannot_write_before_the_story(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "events.json"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "keepalive", "demo", "--record", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"the directory {path.parent} does not exist" in done.stderr
    assert "NAT" not in done.stdout  # refused before the story started
    assert time.monotonic() - started < 10
    assert not path.parent.exists()


def test_missing_event_is_a_clear_error(pictures: ModuleType) -> None:
    recording = json.loads((DATA / "demo-events.json").read_text(encoding="utf-8"))
    recording["events"] = [e for e in recording["events"] if e["kind"] != "healed"]
    with pytest.raises(pictures.InputError, match="no 'healed' event"):
        pictures.draw_timeline(recording)


# -- the fault matrix -------------------------------------------------------------------------


def test_fault_chart_data_from_a_report(fault_report: ModuleType, pictures: ModuleType) -> None:
    """scripts/fault_report.py's chart data: median and maximum per cell, blind spots kept
    with how long they were watched, n/a cells left out; the chart draws every cell."""
    cell = fault_report.CellResult
    cells = [
        cell("black_hole", "hb_sync", 0, fault_report.DETECT, bound=0.5, detection=0.51),
        cell("black_hole", "hb_sync", 1, fault_report.DETECT, bound=0.5, detection=0.55),
        cell("black_hole", "hb_sync", 2, fault_report.DETECT, bound=0.5, detection=0.50),
        cell("black_hole", "kernel", 0, fault_report.UNSEEN, bound=3.0, watched=9.0,
             reason="the relay's kernel answers"),
        cell("black_hole", "kernel_ut", 0, fault_report.NOT_APPLICABLE, reason="no"),
    ]  # fmt: skip
    resources = fault_report.Resources(fds=5, threads=1)
    row = fault_report.RowResult(
        "black_hole", "peer host black-holed", "how", "promise", cells, resources, resources, 1.0
    )
    report = fault_report.Report(
        command="python3 scripts/fault_report.py --quick",
        profile="quick",
        repetitions=3,
        date="2026-01-02 03:04 UTC",
        machine={},
        configs={},
        bounds={"kernel": 3.0, "hb_sync": 0.5},
        rows=[row],
        seconds=1.0,
    )
    data = fault_report.chart_data(report)
    json.dumps(data)  # JSON-ready
    assert data["repetitions"] == 3
    (scenario,) = data["scenarios"]
    by_layer = {c["layer"]: c for c in scenario["cells"]}
    assert set(by_layer) == {"hb_sync", "kernel"}
    assert by_layer["hb_sync"]["median"] == 0.51
    assert by_layer["hb_sync"]["max"] == 0.55
    assert by_layer["hb_sync"]["runs"] == 3
    assert by_layer["kernel"]["median"] is None
    assert by_layer["kernel"]["watched"] == 9.0
    texts = _texts(pictures.draw_fault_detection(data))
    assert "0.51 s" in texts
    assert "no verdict in 9 s: the relay's kernel answers" in texts


@pytest.mark.skipif(sys.platform != "linux", reason="scripts/fault_report.py measures Linux")
def test_fault_report_writes_the_chart_data_of_a_real_run(
    tmp_path: Path, pictures: ModuleType
) -> None:
    """One real scenario (a killed server: every layer sees it at once, in about 2 s) through
    scripts/fault_report.py's command line: the chart data it writes draws, and the report
    shows the chart."""
    chart, markdown = tmp_path / "chart.json", tmp_path / "reliability.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fault_report.py"), "--quick", "--only", "kill",
         "--output", str(markdown), "--chart-json", str(chart)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(chart.read_text(encoding="utf-8"))
    assert data["command"] == "python3 scripts/fault_report.py --quick --only kill"
    (scenario,) = data["scenarios"]
    assert scenario["key"] == "kill"
    layers = {cell["layer"] for cell in scenario["cells"]}
    assert layers == {"kernel", "kernel_ut", "hb_sync", "hb_aio", "supervised"}
    for cell in scenario["cells"]:
        assert 0 <= cell["median"] <= cell["max"] < cell["bound"], cell
    assert "peer process killed" in _texts(pictures.draw_fault_detection(data))
    assert "](images/fault-detection.svg)" in markdown.read_text(encoding="utf-8")


def test_committed_fault_data_matches_the_reliability_report() -> None:
    """The chart's numbers are the ones docs/reliability.md shows (the same run)."""
    data = json.loads((DATA / "fault-report.json").read_text(encoding="utf-8"))
    report = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert f"`{data['command']}` on {data['date']}" in report
    titles = {layer["key"]: layer["title"] for layer in data["layers"]}
    for scenario in data["scenarios"]:
        for cell in scenario["cells"]:
            if cell["median"] is None:
                continue
            shown = f"{cell['median']:.2f} (max {cell['max']:.2f})"
            row = f"| {scenario['key']} | {titles[cell['layer']]} | {cell['runs']} |"
            line = next(line for line in report.splitlines() if line.startswith(row))
            assert shown in line, (line, shown)


# -- the benchmarks (their JSON arrives late: drawn here from the agreed schema) ------------------


def _bench(name: str) -> dict[str, Any]:
    return {
        "benchmark": name,
        "machine": {"cpus": 2, "python": "3.11.7", "platform": "Linux-6.1-x86_64"},
        "runs": 5,
        "rows": [
            {"name": "asyncio 10k at 1 Hz", "contender": "keepalive", "baseline": "bare-I/O floor",
             "ratio": 1.04, "spread": [1.01, 1.07], "limit": 1.05, "loop": "asyncio"},
            {"name": "10k at 1 Hz", "contender": "keepalive", "baseline": "bare-I/O floor",
             "ratio": 1.31, "spread": [1.2, 1.4], "limit": 1.1, "loop": "uvloop"},
        ],
        "series": [
            {"name": "CPU per beat vs connections (asyncio)", "x_label": "connections",
             "y_label": "µs CPU per beat", "points": [[1000, 3.1], [2500, 3.0], [10000, 3.3]],
             "loop": "asyncio"},
        ],
    }  # fmt: skip


def test_bench_charts_from_the_agreed_schema(
    tmp_path: Path, pictures: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    heartbeat, datapath = _bench("heartbeat"), _bench("datapath")
    for name, data in (("heartbeat", heartbeat), ("datapath", datapath)):
        (tmp_path / f"bench-{name}.json").write_text(json.dumps(data), encoding="utf-8")
    ratios = pictures.draw_bench_ratios(heartbeat, "heartbeat")
    root = ET.fromstring(ratios)
    texts = _texts(ratios)
    assert "asyncio 10k at 1 Hz" in texts  # the loop is named once
    assert "10k at 1 Hz [uvloop]" in texts
    assert "1.04" in texts
    assert "1.31" in texts
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("fill-opacity") == "0.8"]
    assert [bar.get("fill") for bar in bars] == [pictures.HEARTBEAT, pictures.LOST]  # over limit
    limits = [line for line in root.iter(f"{SVG}line") if line.get("stroke-width") == "3"]
    assert len(limits) == 2  # each row's limit is marked
    # the bars are drawn to scale: 1.31 is longer than 1.04 by their ratio
    widths = [float(bar.get("width", 0)) for bar in bars]
    assert widths[1] / widths[0] == pytest.approx(1.31 / 1.04, rel=0.01)
    scaling = pictures.draw_bench_scaling([heartbeat, datapath])
    assert len(list(ET.fromstring(scaling).iter(f"{SVG}path"))) == 2  # one line per series
    assert "CPU per beat vs connections (asyncio)" in _texts(scaling)
    # the script picks the files up from docs/data and writes the three charts
    monkeypatch.setattr(pictures, "PICTURES", _moved(pictures, tmp_path))
    assert pictures.main([]) == 0
    for name in ("bench-heartbeat.svg", "bench-datapath.svg", "bench-scaling.svg"):
        assert (tmp_path / name).read_text(encoding="utf-8").startswith("<svg")
    assert pictures.main(["--check"]) == 0
    (tmp_path / "bench-datapath.json").write_text(
        json.dumps({**datapath, "runs": 7}), encoding="utf-8"
    )
    assert pictures.main(["--check"]) == 1  # a changed input makes its picture stale


def _moved(pictures: ModuleType, directory: Path) -> tuple[Any, ...]:
    """The bench pictures, with their inputs and outputs in ``directory``."""
    moved = []
    for picture in pictures.PICTURES:
        if picture.output.name.startswith("bench-"):
            moved.append(
                pictures.Picture(
                    directory / picture.output.name,
                    tuple(directory / path.name for path in picture.inputs),
                    picture.draw,
                    picture.required,
                )
            )
    return tuple(moved)


def test_bench_rows_missing_a_key_are_a_clear_error(pictures: ModuleType) -> None:
    data = _bench("heartbeat")
    del data["rows"][1]["ratio"]
    with pytest.raises(
        pictures.InputError, match=re.escape("bench-heartbeat.json: row 1: missing key 'ratio'")
    ):
        pictures.draw_bench_ratios(data, "heartbeat")
