#!/usr/bin/env python3
"""Draw the documentation's pictures (docs/images/*.svg) from the data of real runs.

    python3 scripts/draw_pictures.py           # regenerate every picture whose input exists
    python3 scripts/draw_pictures.py --check   # exit 1 if a committed picture is stale

Inputs and pictures:

- docs/data/demo-events.json (``python3 -m keepalive demo --record docs/data/demo-events.json``)
  -> docs/images/nat-timeline.svg: the NAT story as a timeline;
- docs/data/fault-report.json (``python3 scripts/fault_report.py``, the documented run)
  -> docs/images/fault-detection.svg: each layer's detection time against its bound;
- docs/data/bench-heartbeat.json, docs/data/bench-datapath.json (the benchmarks' ``--json``)
  -> docs/images/bench-heartbeat.svg, bench-datapath.svg (ratio bars, each row's limit marked)
  and bench-scaling.svg (every series as a line);
- nothing (the picture is the code below) -> docs/images/layers.svg: the three layers and
  where a proxying NAT sits.

Plain SVG written by hand-rolled code, no plotting library: the output depends only on the
input files (fixed number formats, no timestamps, no random ids), so a test can redraw each
picture in memory and compare it with the committed file (tests/test_pictures.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "data"
IMAGES = ROOT / "docs" / "images"

FONT = "-apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
MONO = "'SFMono-Regular', Consolas, 'Liberation Mono', Menlo, monospace"
INK = "#222222"
MUTED = "#666666"
GRID = "#dddddd"
SERVER = "#2e7d32"
LOST = "#c62828"
KERNEL = "#ef6c00"
HEARTBEAT = "#1565c0"
SUPERVISOR = "#6a1b9a"
LAYER_COLOURS = {
    "kernel": KERNEL,
    "kernel_ut": "#b26a00",
    "hb_sync": HEARTBEAT,
    "hb_aio": "#0277bd",
    "supervised": SUPERVISOR,
}
CHAR_WIDTH = 0.56  # of the font size: a conservative average for estimating text widths


class InputError(ValueError):
    """An input file does not have the keys or values a picture needs."""


# ---------------------------------------------------------------------------------------------
# A tiny SVG writer


def num(value: float) -> str:
    """A coordinate with at most one decimal, without trailing zeros (stable text)."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


class Svg:
    def __init__(self, width: float, height: float, title: str, description: str) -> None:
        self.width = width
        self.height = height
        self.parts: list[str] = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{num(width)}" '
            f'height="{num(height)}" viewBox="0 0 {num(width)} {num(height)}" role="img" '
            f'font-family="{FONT}" font-size="12" fill="{INK}">',
            f"<title>{escape(title)}</title>",
            f"<desc>{escape(description)}</desc>",
            '<rect width="100%" height="100%" fill="#ffffff"/>',
        ]

    def add(self, element: str) -> None:
        self.parts.append(element)

    def defs(self, body: str) -> None:
        self.parts.append(f"<defs>{body}</defs>")

    def rect(self, x: float, y: float, w: float, h: float, fill: str, *, extra: str = "") -> None:
        self.add(
            f'<rect x="{num(x)}" y="{num(y)}" width="{num(max(w, 0.0))}" '
            f'height="{num(h)}" fill="{fill}"{extra}/>'
        )

    def line(
        self, x1: float, y1: float, x2: float, y2: float, stroke: str, *, extra: str = ""
    ) -> None:
        self.add(
            f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" '
            f'stroke="{stroke}"{extra}/>'
        )

    def circle(self, cx: float, cy: float, fill: str, title: str = "") -> None:
        tip = f"<title>{escape(title)}</title>" if title else ""
        self.add(
            f'<circle cx="{num(cx)}" cy="{num(cy)}" r="{4 if not title else 3.5}" '
            f'fill="{fill}">{tip}</circle>'
        )

    def text(
        self,
        x: float,
        y: float,
        content: str,
        *,
        anchor: str = "start",
        size: float = 12,
        fill: str = INK,
        weight: str = "normal",
        family: str | None = None,
    ) -> None:
        attributes = f' text-anchor="{anchor}"' if anchor != "start" else ""
        if size != 12:
            attributes += f' font-size="{num(size)}"'
        if fill != INK:
            attributes += f' fill="{fill}"'
        if weight != "normal":
            attributes += f' font-weight="{weight}"'
        if family is not None:
            attributes += f' font-family="{family}"'
        self.add(f'<text x="{num(x)}" y="{num(y)}"{attributes}>{escape(content)}</text>')

    def render(self) -> str:
        return "\n".join([*self.parts, "</svg>"]) + "\n"


def text_width(content: str, size: float = 12) -> float:
    return len(content) * size * CHAR_WIDTH


def hatch(pattern_id: str, colour: str) -> str:
    return (
        f'<pattern id="{pattern_id}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{colour}" stroke-width="2.5"/></pattern>'
    )


def nice_step(span: float, ticks: int = 8) -> float:
    """A 1-2-5 step that divides ``span`` into about ``ticks`` parts."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)


def tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def need(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise InputError(f"{where}: missing key {key!r}")
    return mapping[key]


# ---------------------------------------------------------------------------------------------
# The NAT story timeline (docs/data/demo-events.json)


@dataclass(frozen=True)
class Story:
    events: list[dict[str, Any]]
    kernel_bound: float
    heartbeat_bound: float
    kernel_settings: str
    heartbeat_settings: str
    result: dict[str, Any]

    def first(self, kind: str) -> float:
        for event in self.events:
            if event["kind"] == kind:
                return float(event["at"])
        raise InputError(f"demo-events.json: no {kind!r} event (the story did not play out)")

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["kind"] == kind]


def read_story(recording: dict[str, Any]) -> Story:
    where = "demo-events.json"
    events = need(recording, "events", where)
    for index, event in enumerate(events):
        for key in ("at", "kind", "who", "text"):
            need(event, key, f"{where}: event {index}")
    kernel = need(recording, "kernel", where)
    beat = need(recording, "heartbeat", where)
    return Story(
        events=events,
        kernel_bound=float(need(kernel, "detection_bound", where)),
        heartbeat_bound=float(need(beat, "detection_bound", where)),
        kernel_settings=(
            f"kernel keepalive idle {kernel['idle']:g} s, interval {kernel['interval']:g} s, "
            f"count {kernel['count']}"
        ),
        heartbeat_settings=(
            f"heartbeat every {beat['interval']:g} s, timeout {beat['timeout']:g} s"
        ),
        result=need(recording, "result", where),
    )


def draw_timeline(recording: dict[str, Any]) -> str:
    story = read_story(recording)
    lost = story.first("server_lost")
    back = story.first("server_back")
    dead = story.first("heartbeat_dead")
    healed = story.first("healed")
    end = math.ceil(max(float(event["at"]) for event in story.events) + 0.5)
    width, left, right = 980.0, 200.0, 40.0
    plot = width - left - right

    def x(seconds: float) -> float:
        return left + plot * seconds / end

    lane_top, lane_gap, bar = 92.0, 78.0, 24.0
    lanes = ["server (via the NAT)", "#1 kernel keepalive", "#2 heartbeat", "#2 supervisor"]
    height = lane_top + lane_gap * len(lanes) + 70
    svg = Svg(
        width,
        height,
        "The NAT story, recorded by keepalive demo",
        "A proxying NAT loses the server at "
        f"{lost:.1f} s. The client trusting kernel keepalive stays ESTABLISHED, its probes "
        f"answered by the NAT, {story.result.get('kernel_still_established_after', 0):.1f} s "
        f"later; the heartbeat declares the server dead at {dead:.1f} s; the supervisor "
        f"retries until the server is back at {back:.1f} s and heals at {healed:.1f} s.",
    )
    svg.defs(hatch("lost", LOST) + hatch("waiting", "#b39ddb"))
    svg.text(16, 26, "The NAT story, recorded by keepalive demo --record", size=16, weight="bold")
    svg.text(
        16,
        46,
        f"{story.kernel_settings} (gives up after {story.kernel_bound:g} s of silence); "
        f"{story.heartbeat_settings} (gives up after {story.heartbeat_bound:g} s)",
        fill=MUTED,
    )
    axis_y = lane_top + lane_gap * len(lanes) - 20
    for second in range(end + 1):
        svg.line(x(second), lane_top - 22, x(second), axis_y, GRID)
        svg.text(x(second), axis_y + 16, f"{second} s", anchor="middle", fill=MUTED, size=11)
    svg.text(
        left + plot / 2, axis_y + 34, "seconds since the clients connected", anchor="middle",
        fill=MUTED,
    )  # fmt: skip
    for moment, colour in ((lost, LOST), (back, SERVER)):
        svg.line(
            x(moment), lane_top - 22, x(moment), axis_y, colour, extra=' stroke-dasharray="3 3"'
        )
    for index, label in enumerate(lanes):
        svg.text(16, lane_top + index * lane_gap + bar / 2 + 4, label, weight="bold")

    # the server, as the clients could reach it
    y = lane_top
    svg.rect(x(0), y, x(lost) - x(0), bar, SERVER)
    svg.rect(x(lost), y, x(back) - x(lost), bar, "url(#lost)", extra=f' stroke="{LOST}"')
    svg.rect(x(back), y, x(end) - x(back), bar, SERVER)
    svg.text(x(0) + 6, y + 16, "reachable", fill="#ffffff")
    svg.text(x(lost) + 6, y - 6, f"{lost:.2f} s: the NAT loses the server", fill=LOST)
    svg.text(x(back) + 6, y - 6, f"{back:.2f} s: back", fill=SERVER)

    # connection #1: what its kernel said
    y += lane_gap
    checks = story.all("kernel")
    established = [event for event in checks if event.get("details", {}).get("established")]
    last_seen = float(established[-1]["at"]) if established else lost
    svg.rect(x(0), y, x(last_seen) - x(0), bar, "#ffe0b2", extra=f' stroke="{KERNEL}"')
    svg.text(x(0) + 6, y + 16, "ESTABLISHED", fill=KERNEL, weight="bold")
    for event in checks:
        details = event.get("details", {})
        fill = KERNEL if details.get("established") else LOST
        svg.circle(x(float(event["at"])), y + bar / 2, fill)
    deadline = lost + story.kernel_bound
    svg.line(
        x(deadline),
        y - 14,
        x(deadline),
        y + bar + 6,
        KERNEL,
        extra=' stroke-width="2" stroke-dasharray="5 3"',
    )
    svg.text(
        x(deadline) + 4,
        y - 6,
        f"its own deadline: {story.kernel_bound:g} s after the loss",
        fill=KERNEL,
    )
    probes = [event["details"].get("unanswered_probes") for event in checks if event.get("details")]
    answered = "every probe answered by the NAT" if all(p == 0 for p in probes) else "probes"
    svg.text(
        x(last_seen) - 6, y + bar + 16,
        f"still ESTABLISHED {last_seen - lost:.1f} s after the loss, {answered}",
        anchor="end", fill=KERNEL,
    )  # fmt: skip

    # connection #2: the heartbeat
    y += lane_gap
    svg.rect(x(0), y, x(dead) - x(0), bar, "#bbdefb", extra=f' stroke="{HEARTBEAT}"')
    for event in story.all("pong"):
        svg.circle(x(float(event["at"])), y + bar / 2, HEARTBEAT)
        rtt = event.get("details", {}).get("rtt")
        answered = f"PONG in {rtt * 1000:.1f} ms" if isinstance(rtt, (int, float)) else "PONG"
        svg.text(x(float(event["at"])), y - 6, answered, anchor="middle", fill=HEARTBEAT, size=11)
    svg.add(
        f'<path d="M{num(x(dead))} {num(y - 4)} l8 {num(bar / 2 + 4)} l-8 {num(bar / 2 + 4)} '
        f'l-8 -{num(bar / 2 + 4)} z" fill="{LOST}"/>'
    )
    detected = story.result.get("heartbeat_detected_after")
    after = f" {detected:.1f} s after the loss" if isinstance(detected, (int, float)) else ""
    svg.text(
        x(dead) + 12, y + 16,
        f"PEER DEAD{after} (bound: {story.heartbeat_bound:g} s after the last reply)",
        fill=LOST, weight="bold",
    )  # fmt: skip

    # connection #2: the supervisor
    y += lane_gap
    svg.rect(x(0), y, x(dead) - x(0), bar, "#e1bee7", extra=f' stroke="{SUPERVISOR}"')
    svg.text(x(0) + 6, y + 16, "connected", fill=SUPERVISOR)
    waits = story.all("retry_wait")
    for wait in waits:
        start = float(wait["at"])
        delay = float(wait.get("details", {}).get("delay", 0.0))
        svg.rect(x(start), y + 6, x(start + delay) - x(start), bar - 12, "url(#waiting)")
        # the attempt itself: from the end of the wait to its failure (or the heal)
        outcome = next(
            (
                float(event["at"])
                for event in story.events
                if event["kind"] in ("retry_failed", "healed")
                and float(event["at"]) >= start + delay - 0.001
            ),
            start + delay,
        )
        svg.rect(x(start + delay), y, x(outcome) - x(start + delay), bar, SUPERVISOR)
    for event in story.all("retry_failed"):
        cx, cy = x(float(event["at"])), y + bar / 2
        svg.add(
            f'<path d="M{num(cx - 5)} {num(cy - 5)} l10 10 m0 -10 l-10 10" '
            f'stroke="{LOST}" stroke-width="2.5"/>'
        )
    svg.rect(x(healed), y, x(end) - x(healed), bar, SERVER)
    svg.text(x(healed) + 4, y + 16, "HEALED", fill="#ffffff", weight="bold")
    healed_after = story.result.get("healed_after")
    attempts = len(story.all("retry_failed"))
    svg.text(
        x(healed) - 6, y + bar + 16,
        f"{attempts} failed attempts, growing delays (hatched); healed"
        + (f" {healed_after:.1f} s after the server came back" if healed_after else ""),
        anchor="end", fill=SUPERVISOR,
    )  # fmt: skip
    return svg.render()


# ---------------------------------------------------------------------------------------------
# The fault matrix's detection times (docs/data/fault-report.json)


def draw_fault_detection(report: dict[str, Any]) -> str:
    where = "fault-report.json"
    layers = need(report, "layers", where)
    titles = {layer["key"]: layer["title"] for layer in layers}
    rows: list[tuple[str, list[dict[str, Any]]]] = []
    for scenario in need(report, "scenarios", where):
        cells = [
            cell
            for cell in need(scenario, "cells", where)
            if cell.get("expectation") in ("detect", "unseen")
        ]
        if cells:
            rows.append((str(need(scenario, "title", where)), cells))
    if not rows:
        raise InputError(f"{where}: no scenario with a detection to draw")
    longest = 0.0
    for _, cells in rows:
        for cell in cells:
            longest = max(
                longest,
                float(cell.get("max") or 0),
                float(cell.get("watched") or 0),
                float(cell.get("bound") or 0) + float(report.get("slack", 0)),
            )
    step = nice_step(longest, 9)
    end = step * math.ceil(longest / step)
    width, left, right = 980.0, 330.0, 30.0
    plot = width - left - right
    bar, row_gap, group_gap, top = 12.0, 16.0, 22.0, 96.0

    def x(seconds: float) -> float:
        return left + plot * seconds / end

    height = top + sum(len(cells) * row_gap + group_gap + 12 for _, cells in rows) + 50
    svg = Svg(
        width,
        height,
        "Detection time of each layer against each fault",
        "For each fault of the fault matrix and each layer of keepalive: the median and maximum "
        "time to a verdict, the layer's documented bound, and where a layer never sees the "
        "fault, how long it was watched.",
    )
    svg.defs(hatch("unseen", "#c8c8c8"))
    svg.text(16, 26, "Time to a verdict, per fault and layer", size=16, weight="bold")
    svg.text(
        16, 46,
        f"{report.get('command', 'scripts/fault_report.py')}, {report.get('date', '')}, "
        f"{report.get('repetitions', '?')} runs per cell: bar = median, whisker = maximum, "
        "black tick = the documented bound",
        fill=MUTED,
    )  # fmt: skip
    svg.rect(16, 58, 14, 10, "url(#unseen)", extra=' stroke="#9e9e9e"')
    svg.text(36, 67, "no verdict while watched: the layer cannot see this fault", fill=MUTED)
    axis_bottom = height - 42
    value = 0.0
    while value <= end + 1e-9:
        svg.line(x(value), top - 8, x(value), axis_bottom, GRID)
        svg.text(x(value), axis_bottom + 16, f"{tick_label(value, step)} s", anchor="middle",
                 fill=MUTED, size=11)  # fmt: skip
        value += step
    y = top
    for title, cells in rows:
        svg.text(16, y + 4, title, weight="bold")
        y += 12
        for cell in cells:
            layer = str(cell.get("layer"))
            colour = LAYER_COLOURS.get(layer, INK)
            svg.text(left - 8, y + 10, titles.get(layer, layer), anchor="end", fill=MUTED, size=11)
            bound = float(cell.get("bound") or 0)
            if cell.get("median") is not None:
                median, highest = float(cell["median"]), float(cell.get("max") or cell["median"])
                svg.rect(x(0), y, x(median) - x(0), bar, colour)
                svg.line(x(median), y + bar / 2, x(highest), y + bar / 2, colour)
                svg.line(x(highest), y + 2, x(highest), y + bar - 2, colour)
                svg.text(x(highest) + 6, y + 10, f"{median:.2f} s", size=11, fill=colour)
            else:
                watched = float(cell.get("watched") or 0)
                svg.rect(x(0), y, x(watched) - x(0), bar, "url(#unseen)", extra=' stroke="#9e9e9e"')
                reason = str(cell.get("reason") or "")
                label = f"no verdict in {watched:g} s" + (f": {reason}" if reason else "")
                svg.rect(x(bound) + 6, y + 1, text_width(label, 11) + 6, bar - 2, "#ffffff")
                svg.text(x(bound) + 9, y + 10, label, size=11, fill=INK)
            svg.line(x(bound), y - 2, x(bound), y + bar + 2, INK, extra=' stroke-width="2"')
            y += row_gap
        y += group_gap
    return svg.render()


# ---------------------------------------------------------------------------------------------
# Benchmarks (docs/data/bench-*.json, the schema agreed with the benchmarks' owner)


def _loop_suffix(name: str, loop: Any) -> str:
    """`` [uvloop]`` after a row's name, unless the name says it already."""
    return f" [{loop}]" if loop and str(loop) not in name else ""


def draw_bench_ratios(bench: dict[str, Any], name: str) -> str:
    where = f"bench-{name}.json"
    rows = need(bench, "rows", where)
    if not rows:
        raise InputError(f"{where}: no rows")
    for index, row in enumerate(rows):
        for key in ("name", "ratio", "contender", "baseline"):
            need(row, key, f"{where}: row {index}")
    highest = max(
        max(float(row["ratio"]), *(float(v) for v in row.get("spread") or []),
            float(row.get("limit") or 0))
        for row in rows
    )  # fmt: skip
    end = max(1.1, math.ceil(highest * 10 + 0.5) / 10)
    width, left, right = 980.0, 300.0, 90.0
    plot = width - left - right
    bar, gap, top = 16.0, 30.0, 96.0

    def x(ratio: float) -> float:
        return left + plot * ratio / end

    height = top + gap * len(rows) + 50
    machine = bench.get("machine") or {}
    svg = Svg(
        width,
        height,
        f"Benchmark: {name}",
        f"The {name} benchmark: for each row, the contender's cost as a ratio of its baseline "
        "(1 = the same), with the spread of the runs and the row's limit.",
    )
    svg.text(16, 26, f"Benchmark: {name}, cost relative to its baseline", size=16, weight="bold")
    svg.text(
        16, 46,
        f"{bench.get('runs', '?')} runs; {machine.get('cpus', '?')} CPUs, Python "
        f"{machine.get('python', '?')}, {machine.get('platform', '?')}. Bar = median ratio, "
        "whisker = spread, red tick = the row's limit (lower is better)",
        fill=MUTED,
    )  # fmt: skip
    axis_bottom = height - 42
    step = nice_step(end, 10)
    value = 0.0
    while value <= end + 1e-9:
        svg.line(x(value), top - 10, x(value), axis_bottom, GRID)
        svg.text(x(value), axis_bottom + 16, tick_label(value, step), anchor="middle",
                 fill=MUTED, size=11)  # fmt: skip
        value += step
    svg.line(x(1), top - 10, x(1), axis_bottom, INK, extra=' stroke-dasharray="4 3"')
    svg.text(x(1), top - 14, "1 = baseline", anchor="middle", fill=MUTED, size=11)
    y = top
    for row in rows:
        ratio = float(row["ratio"])
        limit = row.get("limit")
        over = limit is not None and ratio > float(limit)
        colour = LOST if over else HEARTBEAT
        loop = _loop_suffix(str(row["name"]), row.get("loop"))
        svg.text(left - 8, y + 12, f"{row['name']}{loop}", anchor="end", size=11)
        svg.rect(x(0), y, x(ratio) - x(0), bar, colour, extra=' fill-opacity="0.8"')
        spread = row.get("spread") or []
        if len(spread) == 2:
            low, high = float(spread[0]), float(spread[1])
            svg.line(x(low), y + bar / 2, x(high), y + bar / 2, INK)
            svg.line(x(low), y + 3, x(low), y + bar - 3, INK)
            svg.line(x(high), y + 3, x(high), y + bar - 3, INK)
        if limit is not None:
            svg.line(
                x(float(limit)),
                y - 3,
                x(float(limit)),
                y + bar + 3,
                LOST,
                extra=' stroke-width="3"',
            )
        label = f"{ratio:.2f}x {row['contender']} / {row['baseline']}"
        svg.text(x(end) + 4, y + 12, f"{ratio:.2f}", size=11, fill=colour, weight="bold")
        svg.add(f"<!-- {escape(label)} -->")
        y += gap
    return svg.render()


def draw_bench_scaling(benches: Sequence[dict[str, Any]]) -> str:
    series = [item for bench in benches for item in bench.get("series") or []]
    if not series:
        raise InputError("bench-*.json: no series to draw")
    panel_height, width, left, right, top = 200.0, 980.0, 90.0, 30.0, 64.0
    height = top + len(series) * (panel_height + 60)
    svg = Svg(
        width,
        height,
        "Benchmarks: how the cost scales",
        "Each benchmark series as a line: the cost per unit of work as the load grows.",
    )
    svg.text(16, 26, "How the cost scales", size=16, weight="bold")
    plot = width - left - right
    y0 = top
    for item in series:
        points = [(float(px), float(py)) for px, py in need(item, "points", "series")]
        if not points:
            raise InputError(f"series {item.get('name')!r}: no points")
        loop = _loop_suffix(str(item.get("name", "")), item.get("loop"))
        svg.text(16, y0 + 10, f"{item.get('name', '')}{loop}", weight="bold")
        x_high = max(px for px, _ in points)
        y_high = max(py for _, py in points)
        x_step, y_step = nice_step(x_high, 8), nice_step(y_high, 4)
        x_end = x_step * math.ceil(x_high / x_step) if x_high > 0 else 1.0
        y_end = y_step * math.ceil(y_high / y_step) if y_high > 0 else 1.0
        base = y0 + 24 + panel_height - 30

        def px_of(value: float, x_end: float = x_end) -> float:
            return left + plot * value / x_end

        def py_of(value: float, base: float = base, y_end: float = y_end) -> float:
            return base - (panel_height - 40) * value / y_end

        value = 0.0
        while value <= y_end + 1e-9:
            svg.line(left, py_of(value), left + plot, py_of(value), GRID)
            svg.text(left - 6, py_of(value) + 4, tick_label(value, y_step), anchor="end",
                     size=11, fill=MUTED)  # fmt: skip
            value += y_step
        value = 0.0
        while value <= x_end + 1e-9:
            svg.text(px_of(value), base + 16, tick_label(value, x_step), anchor="middle",
                     size=11, fill=MUTED)  # fmt: skip
            value += x_step
        svg.text(left + plot / 2, base + 32, str(item.get("x_label", "")), anchor="middle",
                 fill=MUTED)  # fmt: skip
        svg.text(16, y0 + 28, str(item.get("y_label", "")), fill=MUTED, size=11)
        path = " ".join(
            f"{'M' if index == 0 else 'L'}{num(px_of(px))} {num(py_of(py))}"
            for index, (px, py) in enumerate(points)
        )
        svg.add(f'<path d="{path}" fill="none" stroke="{HEARTBEAT}" stroke-width="2"/>')
        for px, py in points:
            svg.circle(px_of(px), py_of(py), HEARTBEAT, f"{px:g}: {py:g}")
        y0 += panel_height + 60
    return svg.render()


# ---------------------------------------------------------------------------------------------
# The three layers and the proxying NAT (no input: the picture is this code)


def draw_layers() -> str:
    width, height = 980.0, 430.0
    svg = Svg(
        width,
        height,
        "The three layers of keepalive and where a proxying NAT sits",
        "Your process runs the supervisor (layer 3) over the heartbeat (layer 2) over a socket "
        "with kernel keepalive (layer 1). A proxying NAT terminates TCP: its kernel answers "
        "the keepalive probes of connection 1 itself and copies only payload into connection "
        "2, so only the heartbeat's ping reaches the server and proves it alive.",
    )
    svg.defs(
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z" '
        'fill="context-stroke"/></marker>'
    )
    svg.text(16, 26, "Three layers, and where a proxying NAT sits", size=16, weight="bold")

    def box(x: float, y: float, w: float, h: float, colour: str, *, title: str, note: str) -> None:
        svg.rect(x, y, w, h, "#ffffff", extra=f' stroke="{colour}" stroke-width="2" rx="6"')
        svg.text(x + 10, y + 20, title, weight="bold", fill=colour)
        if note:
            svg.text(x + 10, y + 38, note, size=11, fill=MUTED)

    # the client process
    svg.rect(16, 48, 340, 360, "#f5f5f5", extra=' rx="8"')
    svg.text(28, 70, "your process", weight="bold")
    box(
        32,
        82,
        308,
        56,
        SUPERVISOR,
        title="3. reconnect: Supervisor, Backoff",
        note="reconnects, growing delays, once the peer is dead",
    )
    box(
        32,
        150,
        308,
        56,
        HEARTBEAT,
        title="2. heartbeat: monitor(), open_connection()",
        note="a PING only the real peer answers, in time",
    )
    svg.rect(16, 222, 340, 186, "#fff3e0", extra=' rx="8"')
    svg.text(28, 244, "your kernel", weight="bold", fill=KERNEL)
    box(
        32,
        256,
        308,
        56,
        KERNEL,
        title="1. kernel keepalive: configure()",
        note="probes after idle s; gives up after count unanswered",
    )
    box(32, 326, 308, 62, INK, title="TCP connection #1", note="to the NAT, not to the server")

    # the NAT
    nat_x = 470.0
    svg.rect(nat_x, 48, 220, 360, "#ffebee", extra=' rx="8"')
    svg.text(nat_x + 12, 70, "proxying NAT", weight="bold", fill=LOST)
    svg.text(nat_x + 12, 88, "vmnat, slirp, vpnkit, SOCKS,", size=11, fill=MUTED)
    svg.text(nat_x + 12, 102, "HTTP CONNECT, SSH tunnels", size=11, fill=MUTED)
    box(nat_x + 14, 150, 192, 56, LOST, title="userspace relay", note="copies payload only")
    box(nat_x + 14, 290, 192, 70, LOST, title="the NAT's kernel", note="ends TCP #1, opens TCP #2;")
    svg.text(nat_x + 24, 352, "ACKs your probes itself", size=11, fill=LOST, weight="bold")

    # the server
    server_x = 770.0
    svg.rect(server_x, 48, 194, 360, "#e8f5e9", extra=' rx="8"')
    svg.text(server_x + 12, 70, "server", weight="bold", fill=SERVER)
    box(server_x + 14, 150, 166, 56, SERVER, title="application", note="answers PING with PONG")
    box(server_x + 14, 290, 166, 70, SERVER, title="TCP connection #2", note="from the NAT")

    arrow = ' stroke-width="2" marker-end="url(#arrow)"'
    # keepalive probe and its answer, both ending at the NAT's kernel
    svg.line(340, 300, nat_x + 12, 300, KERNEL, extra=arrow)
    svg.text(352, 294, "keepalive probe", size=11, fill=KERNEL)
    svg.line(nat_x + 12, 340, 342, 340, KERNEL, extra=arrow + ' stroke-dasharray="5 3"')
    svg.text(352, 356, "ACK from the NAT", size=11, fill=KERNEL)
    # the heartbeat's ping crosses to the server, the pong comes back
    svg.line(340, 172, nat_x + 12, 172, HEARTBEAT, extra=arrow)
    svg.text(360, 166, "PING", size=11, fill=HEARTBEAT, weight="bold")
    svg.line(nat_x + 206, 172, server_x + 12, 172, HEARTBEAT, extra=arrow)
    svg.line(server_x + 12, 192, nat_x + 208, 192, HEARTBEAT, extra=arrow)
    svg.text(nat_x + 222, 210, "PONG", size=11, fill=HEARTBEAT, weight="bold")
    svg.line(nat_x + 12, 192, 342, 192, HEARTBEAT, extra=arrow)
    svg.line(nat_x + 206, 325, server_x + 12, 325, MUTED, extra=arrow)
    svg.text(nat_x + 222, 318, "TCP #2", size=11, fill=MUTED)
    svg.text(
        width / 2, 428 - 4,
        "When the server is lost, the NAT still answers the probes: only the heartbeat notices.",
        anchor="middle", fill=MUTED,
    )  # fmt: skip
    return svg.render()


# ---------------------------------------------------------------------------------------------
# Which pictures exist, from which inputs


@dataclass(frozen=True)
class Picture:
    output: Path
    inputs: tuple[Path, ...]
    draw: Callable[[list[Any]], str]
    required: bool  # False: drawn only when its inputs exist (written late by someone else)


def _bench_scaling(data: list[Any]) -> str:
    return draw_bench_scaling(data)


PICTURES: tuple[Picture, ...] = (
    Picture(IMAGES / "nat-timeline.svg", (DATA / "demo-events.json",),
            lambda data: draw_timeline(data[0]), True),
    Picture(IMAGES / "fault-detection.svg", (DATA / "fault-report.json",),
            lambda data: draw_fault_detection(data[0]), True),
    Picture(IMAGES / "layers.svg", (), lambda data: draw_layers(), True),
    Picture(IMAGES / "bench-heartbeat.svg", (DATA / "bench-heartbeat.json",),
            lambda data: draw_bench_ratios(data[0], "heartbeat"), False),
    Picture(IMAGES / "bench-datapath.svg", (DATA / "bench-datapath.json",),
            lambda data: draw_bench_ratios(data[0], "datapath"), False),
    Picture(IMAGES / "bench-scaling.svg",
            (DATA / "bench-heartbeat.json", DATA / "bench-datapath.json"),
            _bench_scaling, False),
)  # fmt: skip


def drawable(picture: Picture) -> bool:
    """Whether the picture's inputs exist (the scaling chart needs one of its two)."""
    if picture.output.name == "bench-scaling.svg":
        return any(path.is_file() for path in picture.inputs)
    return all(path.is_file() for path in picture.inputs)


def render(picture: Picture) -> str:
    data = [
        json.loads(path.read_text(encoding="utf-8")) for path in picture.inputs if path.is_file()
    ]
    try:
        return picture.draw(data)
    except (KeyError, TypeError, ValueError) as error:
        names = ", ".join(_shown(path) for path in picture.inputs)
        raise InputError(f"{picture.output.name} from {names}: {error}") from error


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a picture is stale"
    )
    args = parser.parse_args(argv)
    stale: list[str] = []
    for picture in PICTURES:
        shown = _shown(picture.output)
        if not drawable(picture):
            missing = [_shown(path) for path in picture.inputs if not path.is_file()]
            if picture.required:
                print(f"error: {shown}: missing input {', '.join(missing)}", file=sys.stderr)
                return 2
            print(f"skipped {shown}: no {' or '.join(missing)} yet", file=sys.stderr)
            continue
        try:
            text = render(picture)
        except InputError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        current = picture.output.read_text(encoding="utf-8") if picture.output.is_file() else None
        if current == text:
            continue
        if args.check:
            stale.append(shown)
            continue
        picture.output.parent.mkdir(parents=True, exist_ok=True)
        picture.output.write_text(text, encoding="utf-8")
        print(f"wrote {shown}", file=sys.stderr)
    if stale:
        print(f"stale: {', '.join(stale)}; run python3 scripts/draw_pictures.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
