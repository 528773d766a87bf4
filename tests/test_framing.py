"""Pongs only as whole messages: framings and MessagePongs (pure; no sockets, no clock)."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keepalive.framing as framing_module
from keepalive.errors import InvalidSetting, InvalidSettingType, KeepaliveError
from keepalive.framing import (
    MAX_HEAD,
    FixedSize,
    Framer,
    Framing,
    FramingError,
    LengthPrefixed,
    Lines,
    MessagePongs,
    PongMatcher,
    make_pong_matcher,
)

# ------------------------------------------------------------------ helpers


def encode(framing: LengthPrefixed, payload: bytes, filler: int = 0x2A) -> bytes:
    """One message of ``payload`` under ``framing`` (header bytes besides the length: filler)."""
    assert framing.length_size is not None
    total = framing.header_size + len(payload)
    value = (total if framing.includes_header else len(payload)) - framing.adjustment
    header = bytearray([filler]) * framing.header_size
    end = framing.length_offset + framing.length_size
    header[framing.length_offset : end] = value.to_bytes(framing.length_size, framing.byteorder)
    return bytes(header) + payload


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


class Netstrings:
    """A user framer: ``<digits>:<payload>,`` (the head needed grows with the digits)."""

    def message_length(self, head: bytes) -> int | None:
        colon = head.find(b":")
        if colon < 0:
            if len(head) > 10 or not head.isdigit():
                raise FramingError(f"not a netstring: {head[:12]!r}")
            return None
        return colon + 1 + int(head[:colon]) + 1

    def __repr__(self) -> str:
        return "Netstrings()"


def split_at(data: bytes, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """``data`` cut at ``cuts`` (taken modulo its length + 1): non-empty (start, end) pieces."""
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [(start, end) for start, end in itertools.pairwise(points) if end > start]


def text(alphabet: bytes, max_size: int, min_size: int = 0) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(alphabet), min_size=min_size, max_size=max_size).map(bytes)


TRICKY_BODIES = [
    b"PONG",
    b"ping-pong score: PING PONG",
    b"xPONG",
    b"PONG PONG",
    b"PONGPONG",
    b"PON",
    b"ONG",
    b"P",
    b"",
    b"PONG ",
]


@dataclasses.dataclass(frozen=True)
class Case:
    """A framing, its pong, strategies for application and pong messages, and two fixed
    application messages that look like pongs but are not."""

    name: str
    framing: Framing
    pong: bytes | Callable[[bytes], bool]
    messages: st.SearchStrategy[bytes]
    pongs: st.SearchStrategy[bytes]
    tricky: tuple[bytes, bytes]
    max_pong: int = 256

    def matcher(self) -> MessagePongs:
        return MessagePongs(self.pong, self.framing, max_pong=self.max_pong)

    def is_pong(self, message: bytes) -> bool:
        if isinstance(self.pong, bytes):
            return message == self.pong
        return len(message) <= self.max_pong and self.pong(message)


def lines_case(name: str, delimiter: bytes, alphabet: bytes) -> Case:
    def whole(body: bytes) -> bool:
        return (body + delimiter).find(delimiter) == len(body)

    # Bodies starting with the delimiter's end or being its start: across a cut they can
    # look like a delimiter that is not one.
    edges = [delimiter[1:] + b"PONG", delimiter[:-1], delimiter[1:], delimiter[-1:] + b"x"]
    bodies = st.one_of(
        st.sampled_from([*TRICKY_BODIES, *edges]), text(alphabet, 12), text(delimiter, 3)
    ).filter(whole)
    pong = b"PONG" + delimiter
    tricky = (b"ping-pong score: PING PONG" + delimiter, delimiter[1:] + b"PONG PONG" + delimiter)
    return Case(
        name, Lines(delimiter), pong, bodies.map(lambda b: b + delimiter), st.just(pong), tricky
    )


def prefixed_case(name: str, framing: LengthPrefixed) -> Case:
    shortest = 0 if framing.includes_header else max(0, framing.adjustment)
    payloads = st.one_of(st.sampled_from(TRICKY_BODIES), text(b"PONGx \x00", 10))
    messages = st.tuples(payloads.filter(lambda p: len(p) >= shortest), st.sampled_from([42, 0]))
    pong = encode(framing, b"PONG")
    tricky = (encode(framing, b"PONX"), encode(framing, b"PONGPONG"))
    return Case(
        name, framing, pong, messages.map(lambda m: encode(framing, *m)), st.just(pong), tricky
    )


def startswith_pong(message: bytes) -> bool:
    return message.startswith(b"PONG ")


def payload_is_pong(message: bytes) -> bool:
    return message[2:6] == b"PONG"


LP2 = LengthPrefixed(2)

CASES = [
    lines_case("lf", b"\n", b"PONG x\n"),
    lines_case("crlf", b"\r\n", b"PONG x\r\n"),
    lines_case("bordered", b"||", b"PONG|x"),
    Case(
        "fixed",
        FixedSize(5),
        b"PONG!",
        st.one_of(
            st.sampled_from([b"PONG!", b"PONG?", b"xPONG", b"PPONG", b"PONG\n"]),
            text(b"PONG!x", 5, min_size=5),
        ),
        st.just(b"PONG!"),
        (b"PONG?", b"!PONG"),
    ),
    prefixed_case("prefixed", LengthPrefixed()),
    prefixed_case("prefixed-little", LengthPrefixed(2, byteorder="little")),
    prefixed_case(
        "prefixed-total",
        LengthPrefixed(6, length_offset=2, length_size=2, includes_header=True, adjustment=-1),
    ),
    prefixed_case("prefixed-adjusted", LengthPrefixed(3, length_offset=1, adjustment=2)),
    Case(
        "netstring",
        Netstrings(),
        netstring(b"PONG"),
        st.one_of(st.sampled_from(TRICKY_BODIES), text(b"PONG:,1x", 14)).map(netstring),
        st.just(netstring(b"PONG")),
        (netstring(b"PONG,"), netstring(b"4:PONG,")),
    ),
    Case(
        "predicate-lines",
        Lines(),
        startswith_pong,
        st.one_of(
            st.sampled_from(
                [
                    b"PONG\n",
                    b"PONG 1\n",
                    b"PONG 1234567\n",
                    b"PONG " + b"x" * 30 + b"\n",
                    b"xPONG 1\n",
                ]
            ),
            text(b"PONG 1x", 14).map(lambda b: b + b"\n"),
        ),
        st.integers(0, 999_999).map(lambda n: b"PONG %d\n" % n),
        (b"PONG " + b"x" * 30 + b"\n", b"PONG\n"),
        max_pong=12,
    ),
    Case(
        "predicate-prefixed",
        LP2,
        payload_is_pong,
        st.one_of(st.sampled_from(TRICKY_BODIES), text(b"PONG 1x", 12)).map(
            lambda p: encode(LP2, p)
        ),
        st.integers(0, 9999).map(lambda n: encode(LP2, b"PONG%d" % n)),
        (encode(LP2, b"PONG" * 5), encode(LP2, b"PING")),
        max_pong=10,
    ),
]


@dataclasses.dataclass
class Stream:
    """A generated inbound stream: its messages, which are pongs, where pings were sent."""

    messages: list[bytes]
    pong_flags: list[bool]
    ping_points: list[int]

    @property
    def data(self) -> bytes:
        return b"".join(self.messages)

    @property
    def application(self) -> bytes:
        return b"".join(
            m for m, pong in zip(self.messages, self.pong_flags, strict=True) if not pong
        )

    @property
    def ends(self) -> set[int]:
        return set(itertools.accumulate(len(m) for m in self.messages)) | {0}

    def pong_equal_starts(self, case: Case) -> list[int]:
        """Where application messages that look exactly like a pong start."""
        starts = itertools.accumulate((len(m) for m in self.messages), initial=0)
        return [
            start
            for start, message, pong in zip(starts, self.messages, self.pong_flags, strict=False)
            if not pong and case.is_pong(message)
        ]


def exchange(case: Case, data: st.DataObject) -> Stream:
    """A ping/pong exchange: each pong answers an earlier ping; a message equal to a pong is
    sent by the application only while no ping is outstanding (otherwise it is ambiguous)."""
    stream = Stream([], [], [])
    owed = 0
    offset = 0
    steps = data.draw(st.lists(st.sampled_from(["app", "app", "ping", "pong"]), max_size=24))
    for step in steps:
        if step == "ping":
            stream.ping_points.append(offset)
            owed += 1
            continue
        if step == "pong":
            if not owed:
                stream.ping_points.append(offset)
                owed += 1
            message = data.draw(case.pongs)
            owed -= 1
        else:
            message = data.draw(case.messages)
            if owed and case.is_pong(message):
                continue  # indistinguishable from the pong that is owed
        stream.messages.append(message)
        stream.pong_flags.append(step == "pong")
        offset += len(message)
    return stream


def check_call_invariants(
    case: Case, matcher: MessagePongs, outstanding: int, removed: int
) -> None:
    assert 0 <= removed <= outstanding
    held = matcher.held
    if outstanding - removed == 0:
        assert held == b""  # nothing is held while no pong is owed
    if held:
        assert not matcher.at_boundary
        if isinstance(case.pong, bytes):
            assert len(held) < len(case.pong)
            assert case.pong.startswith(held)
        else:
            assert len(held) < case.max_pong


def reference(
    case: Case, messages: list[bytes], calls: list[tuple[int, int, int, bool]]
) -> tuple[bytes, int]:
    """The specified result at message level: a pong is removed if it starts while a pong is
    still owed in its call, and every later call it spans owes one too with no flush in
    between (it was held). Calls are (start, end, outstanding, flush before)."""
    starts = list(itertools.accumulate((len(m) for m in messages), initial=0))
    removed: set[int] = set()
    held: int | None = None
    for start, end, outstanding, flushed in calls:
        budget = outstanding
        if outstanding == 0 or flushed:
            held = None
        for index, message in enumerate(messages):
            first, last = starts[index], starts[index] + len(message)
            if last <= start or first >= end:
                continue
            candidate = budget > 0 if first >= start else held == index
            if last <= end:
                if candidate and case.is_pong(message):
                    removed.add(index)
                    budget -= 1
                held = None
            else:
                held = index if candidate else None
    kept = b"".join(m for index, m in enumerate(messages) if index not in removed)
    return kept, len(removed)


# -------------------------------------------------------- property tests


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_application_gets_exactly_its_messages(case: Case, data: st.DataObject) -> None:
    """Pongs at random boundaries, random chunks, pings owed >= pongs on their way."""
    stream = exchange(case, data)
    raw = stream.data
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=12))
    # The driver reads what arrived before it sends a ping apart from what comes after.
    chunks = split_at(raw, [*cuts, *stream.ping_points])
    ambiguous = stream.pong_equal_starts(case)
    matcher = case.matcher()
    received = b""
    removed_total = 0
    for start, end in chunks:
        sent = sum(1 for point in stream.ping_points if point <= start)
        extra = 0
        if not any(start <= at < end for at in ambiguous):
            extra = data.draw(st.integers(0, 2))  # pings whose pong is late or lost
        outstanding = sent - removed_total + extra
        assert outstanding >= 0
        out, removed = matcher.feed(raw[start:end], outstanding)
        check_call_invariants(case, matcher, outstanding, removed)
        assert matcher.at_boundary == (end in stream.ends)
        received += out
        removed_total += removed
    received += matcher.flush()
    assert received == stream.application
    assert removed_total == sum(stream.pong_flags)
    assert matcher.at_boundary


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_any_schedule_removes_only_whole_pongs(case: Case, data: st.DataObject) -> None:
    """Any outstanding counts and flushes, pong-like application messages anywhere: exactly
    the specified whole pong messages are removed, and nothing else changes."""
    messages = data.draw(st.lists(st.one_of(case.messages, case.pongs), max_size=16))
    raw = b"".join(messages)
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=12))
    calls = [
        (start, end, data.draw(st.integers(0, 3)), data.draw(st.booleans()))
        for start, end in split_at(raw, cuts)
    ]
    matcher = case.matcher()
    received = b""
    removed_total = 0
    for start, end, outstanding, flushed in calls:
        if flushed:
            received += matcher.flush()
            assert matcher.held == b""
        out, removed = matcher.feed(raw[start:end], outstanding)
        check_call_invariants(case, matcher, outstanding, removed)
        received += out
        removed_total += removed
    received += matcher.flush()
    assert (received, removed_total) == reference(case, messages, calls)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_split_offset(case: Case) -> None:
    """A pong between pong-like messages, split at every pair of offsets and byte by byte."""
    first, second = case.tricky
    assert not case.is_pong(first)
    assert not case.is_pong(second)
    pong = case.pong if isinstance(case.pong, bytes) else b"PONG 7\n"
    if case.framing == LP2:
        pong = encode(LP2, b"PONG7")
    assert case.is_pong(pong)
    raw = first + pong + second
    expected = first + second
    ends = {0, len(first), len(first) + len(pong), len(raw)}
    for cut in range(len(raw) + 1):
        for other in range(cut, len(raw) + 1):
            matcher = case.matcher()
            idle = case.matcher()  # nothing owed: everything passes, boundaries still known
            received = b""
            removed = 0
            for start, end in split_at(raw, [cut, other]):
                out, count = matcher.feed(raw[start:end], 1 - removed)
                received += out
                removed += count
                assert idle.feed(raw[start:end], 0) == (raw[start:end], 0)
                assert matcher.at_boundary == idle.at_boundary == (end in ends), (cut, other)
            assert (received + matcher.flush(), removed) == (expected, 1), (cut, other)
    matcher = case.matcher()
    received = b""
    removed = 0
    for index in range(len(raw)):
        out, count = matcher.feed(raw[index : index + 1], 1 - removed)
        received += out
        removed += count
    assert (received, removed) == (expected, 1)
    assert matcher.held == b""


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_leading_pongs_agrees_with_feed(case: Case, data: st.DataObject) -> None:
    before = data.draw(st.lists(st.one_of(case.messages, case.pongs), max_size=3))
    messages = data.draw(st.lists(st.one_of(case.messages, case.pongs), max_size=6))
    cut = data.draw(st.integers(0, 10_000))
    outstanding = data.draw(st.integers(0, 4))
    matcher = case.matcher()
    prefix = b"".join(before)
    matcher.feed(prefix[: cut % (len(prefix) + 1)], data.draw(st.integers(0, 2)))
    raw = b"".join(messages)
    state = (matcher.held, matcher.at_boundary)
    size, pongs = matcher.leading_pongs(raw, outstanding)
    assert (matcher.held, matcher.at_boundary) == state  # pure
    if not matcher.at_boundary:
        assert (size, pongs) == (0, 0)
        return
    expected = list(itertools.takewhile(case.is_pong, messages))[:outstanding]
    assert (size, pongs) == (sum(map(len, expected)), len(expected))
    assert matcher.feed(raw[:size], outstanding) == (b"", pongs)
    assert matcher.at_boundary


# ------------------------------------------------------------- behaviour


class TestMessagePongs:
    def test_the_bug_report(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        stream = b"ping-pong score: PING PONG\n" + b"next line\n"
        assert matcher.feed(stream, 1) == (stream, 0)
        assert matcher.held == b""
        assert matcher.at_boundary

    def test_pong_between_lines_removed(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        assert matcher.feed(b"a PONG\nPONG\nPONG b\n", 1) == (b"a PONG\nPONG b\n", 1)

    def test_pong_equal_messages_delivered_when_nothing_owed(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        assert matcher.feed(b"PONG\nPONG\n", 0) == (b"PONG\nPONG\n", 0)
        assert matcher.feed(b"PONG\n", 0) == (b"PONG\n", 0)

    def test_at_most_outstanding_removed_per_call(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        assert matcher.feed(b"PONG\nPONG\nPONG\n", 2) == (b"PONG\n", 2)
        assert matcher.feed(b"PONG\nPO", 1) == (b"PO", 1)  # nothing owed after: not held
        assert matcher.held == b""

    def test_exact_pong_fast_path(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        assert matcher.feed(b"PONG\n", 1) == (b"", 1)
        assert matcher.feed(b"x", 0) == (b"x", 0)
        assert matcher.feed(b"PONG\n", 1) == (b"PONG\n", 0)  # not at a boundary: inside "x..."

    def test_nothing_owed_passes_the_same_object(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        chunk = b"abc\ndef"
        out, count = matcher.feed(chunk, 0)
        assert out is chunk
        assert count == 0
        assert not matcher.at_boundary

    def test_partial_pong_held_then_completed(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        assert matcher.feed(b"a\nPO", 1) == (b"a\n", 0)
        assert matcher.held == b"PO"
        assert not matcher.at_boundary
        assert matcher.feed(b"NG\nb", 1) == (b"b", 1)
        assert matcher.held == b""

    def test_partial_pong_released_when_it_diverges(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        assert matcher.feed(b"PON", 1) == (b"", 0)
        assert matcher.feed(b"D\nPONG\n", 1) == (b"POND\n", 1)

    def test_known_non_pong_passed_at_once(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        assert matcher.feed(b"PX", 1) == (b"PX", 0)
        assert matcher.feed(b"PONG\n", 1) == (b"PONG\n", 0)  # rest of the "PX..." line
        fixed = MessagePongs(b"PONG!", FixedSize(5))
        assert fixed.feed(b"PONX", 1) == (b"PONX", 0)
        framed = MessagePongs(encode(LengthPrefixed(), b"PONG"), LengthPrefixed())
        assert framed.feed(encode(LengthPrefixed(), b"x" * 100)[:6], 1)[1] == 0
        assert framed.held == b""

    def test_holding_only_while_owed(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        assert matcher.feed(b"PO", 1) == (b"", 0)
        assert matcher.feed(b"NG", 0) == (b"PONG", 0)  # released, in order, first
        assert matcher.held == b""
        assert matcher.feed(b"\nPONG\n", 1) == (b"\n", 1)  # boundary tracking went on

    def test_flush_releases_and_keeps_the_boundary(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        assert matcher.feed(b"PO", 1) == (b"", 0)
        assert matcher.flush() == b"PO"
        assert matcher.flush() == b""
        assert not matcher.at_boundary
        assert matcher.feed(b"NG\nPONG\n", 1) == (b"NG\n", 1)

    def test_delimiter_split_across_chunks(self) -> None:
        matcher = MessagePongs(b"PONG\r\n", Lines(b"\r\n"))
        assert matcher.feed(b"abc\r", 1) == (b"abc\r", 0)
        assert matcher.feed(b"\nPONG\r", 1) == (b"\n", 0)
        assert matcher.held == b"PONG\r"
        assert matcher.feed(b"\n", 1) == (b"", 1)
        assert matcher.feed(b"x\r", 0) == (b"x\r", 0)
        assert matcher.feed(b"\nPONG\r\n", 1) == (b"\n", 1)
        # A lone b"\n" ends no CRLF line.
        assert matcher.feed(b"PONG\nPONG\r\n", 1) == (b"PONG\nPONG\r\n", 0)

    def test_bordered_delimiter_ends_at_first_occurrence(self) -> None:
        matcher = MessagePongs(b"||", Lines(b"||"))
        # b"a|||" is the line b"a||" and then b"|..." starts the next one.
        assert matcher.feed(b"a|||", 0) == (b"a|||", 0)
        assert not matcher.at_boundary
        # The first b"|" ends that b"||" line; then a pong.
        assert matcher.feed(b"|||", 1) == (b"|", 1)
        assert matcher.at_boundary
        assert matcher.feed(b"|||", 1) == (b"|", 1)  # a pong; then b"|" with nothing owed
        assert matcher.feed(b"||", 1) == (b"|", 0)  # ends that line; b"|" may start a pong
        assert matcher.held == b"|"
        assert matcher.feed(b"|", 1) == (b"", 1)

    def test_predicate_pong_and_max_pong(self) -> None:
        matcher = MessagePongs(startswith_pong, Lines(), max_pong=12)
        assert matcher.feed(b"PONG 1\nPONG " + b"x" * 20 + b"\n", 2) == (
            b"PONG " + b"x" * 20 + b"\n",
            1,
        )
        assert matcher.feed(b"PONG 12", 1) == (b"", 0)
        assert matcher.held == b"PONG 12"
        assert matcher.feed(b"34567", 1) == (b"PONG 1234567", 0)  # 12 bytes, no end: too long
        assert matcher.held == b""
        assert matcher.feed(b"\n", 1) == (b"\n", 0)

    def test_predicate_sees_whole_messages_only(self) -> None:
        seen: list[bytes] = []

        def is_pong(message: bytes) -> bool:
            seen.append(message)
            return message == b"PONG\n"

        matcher = MessagePongs(is_pong, Lines())
        assert matcher.feed(b"ab", 1) == (b"", 0)
        assert matcher.feed(b"c\nPONG\nd", 1) == (b"abc\nd", 1)
        assert seen == [b"abc\n", b"PONG\n"]
        assert matcher.feed(b"PONG\n", 1) == (b"PONG\n", 0)  # the rest of "d..."
        assert seen == [b"abc\n", b"PONG\n"]

    def test_predicate_with_token_echo(self) -> None:
        token = [b"17"]
        matcher = MessagePongs(lambda m: m == b"PONG " + token[0] + b"\n", Lines())
        assert matcher.feed(b"PONG 16\nPONG 17\n", 1) == (b"PONG 16\n", 1)

    def test_fixed_size_skips_by_arithmetic(self) -> None:
        matcher = MessagePongs(b"PONG!", FixedSize(5))
        assert matcher.feed(b"PONG!PO", 0) == (b"PONG!PO", 0)
        assert not matcher.at_boundary
        assert matcher.feed(b"NG!PONG!", 1) == (b"NG!", 1)

    @pytest.mark.parametrize(
        "framing",
        [
            LengthPrefixed(),
            LengthPrefixed(2, byteorder="little"),
            LengthPrefixed(8, length_offset=4, length_size=4, includes_header=True),
            LengthPrefixed(3, length_offset=1, length_size=1, adjustment=-1),
        ],
        ids=repr,
    )
    def test_length_prefixed_variants(self, framing: LengthPrefixed) -> None:
        pong = encode(framing, b"PONG")
        assert framing.message_length(pong) == len(pong)
        assert framing.message_length(pong[:-1] + b"more") == len(pong)
        assert framing.message_length(pong[: framing.header_size - 1]) is None
        matcher = MessagePongs(pong, framing)
        app = encode(framing, b"PONG" * 3) + encode(framing, pong)
        assert matcher.feed(app + pong + app, 1) == (app + app, 1)

    def test_length_prefixed_fields(self) -> None:
        little = LengthPrefixed(2, byteorder="little")
        assert little.message_length(b"\x03\x00abc") == 5
        assert LengthPrefixed(2).message_length(b"\x00\x03abc") == 5
        total = LengthPrefixed(4, includes_header=True)
        assert total.message_length(b"\x00\x00\x00\x06ab") == 6
        adjusted = LengthPrefixed(4, length_offset=2, adjustment=3)
        assert adjusted.length_size == 2
        assert adjusted.message_length(b"\xff\xff\x00\x01") == 8

    @pytest.mark.parametrize(
        ("framing", "header"),
        [
            (LengthPrefixed(4, includes_header=True), b"\x00\x00\x00\x03"),
            (LengthPrefixed(2, includes_header=True), b"\x00\x00"),
            (LengthPrefixed(2, adjustment=-3), b"\x00\x01"),
        ],
    )
    def test_length_below_header_is_a_framing_error(
        self, framing: LengthPrefixed, header: bytes
    ) -> None:
        with pytest.raises(FramingError, match="shorter than the"):
            framing.message_length(header)
        matcher = MessagePongs(lambda m: False, framing)
        with pytest.raises(FramingError):
            matcher.feed(header, 0)
        assert issubclass(FramingError, KeepaliveError)
        assert issubclass(FramingError, ValueError)

    def test_user_framer_needing_a_long_head(self) -> None:
        class Padded:
            """Messages of 100 bytes, recognisable only once all 100 are in."""

            def message_length(self, head: bytes) -> int | None:
                return 100 if len(head) >= 100 else None

        pong = b"P" * 100
        matcher = MessagePongs(pong, Padded())
        app = b"a" * 100
        assert matcher.feed(app + pong + app, 1) == (app + app, 1)
        assert matcher.feed(app[:30], 0) == (app[:30], 0)
        assert matcher.feed(app[30:] + pong[:50], 1) == (app[30:], 0)
        assert matcher.feed(pong[50:], 1) == (b"", 1)

    @pytest.mark.parametrize(
        "answer",
        [lambda head: None, lambda head: 0, lambda head: -4, lambda head: "5", lambda head: True],
        ids=["none-forever", "zero", "negative", "str", "bool"],
    )
    def test_misbehaving_framer(self, answer: Callable[[bytes], object]) -> None:
        class Bad:
            def message_length(self, head: bytes) -> object:
                return answer(head)

        matcher = MessagePongs(lambda m: False, Bad())  # type: ignore[arg-type]
        with pytest.raises(FramingError):
            matcher.feed(b"x" * (MAX_HEAD + 1), 0)

    def test_framer_shrinking_its_answer(self) -> None:
        class Shrinking:
            def message_length(self, head: bytes) -> int | None:
                return None if len(head) < 10 else 2

        matcher = MessagePongs(lambda m: False, Shrinking())
        assert matcher.feed(b"abc", 0) == (b"abc", 0)
        with pytest.raises(FramingError, match="after None for 3 bytes"):
            matcher.feed(b"x" * 20, 0)

    def test_none_forever_in_small_chunks(self) -> None:
        class Never:
            def message_length(self, head: bytes) -> int | None:
                return None

        matcher = MessagePongs(lambda m: False, Never())
        chunk = b"y" * 4096
        for _ in range(MAX_HEAD // len(chunk) - 1):
            assert matcher.feed(chunk, 0) == (chunk, 0)
        with pytest.raises(FramingError, match="MAX_HEAD"):
            matcher.feed(chunk, 0)

    def test_leading_pongs(self) -> None:
        matcher = MessagePongs(b"PONG\n", Lines())
        assert matcher.leading_pongs(b"PONG\nPONG\nPONG\nx\n", 2) == (10, 2)
        assert matcher.leading_pongs(b"PONG\nPO", 5) == (5, 1)
        assert matcher.leading_pongs(b"PONG\n", 0) == (0, 0)
        assert matcher.leading_pongs(b"xPONG\n", 1) == (0, 0)
        matcher.feed(b"x", 0)
        assert matcher.leading_pongs(b"PONG\n", 1) == (0, 0)  # inside a message
        predicate = MessagePongs(startswith_pong, Lines(), max_pong=12)
        assert predicate.leading_pongs(b"PONG 1\nPONG 22\nPONG 333333333\n", 3) == (15, 2)

    def test_properties_and_repr(self) -> None:
        matcher = MessagePongs(bytearray(b"PONG\n"), Lines())
        assert matcher.pong == b"PONG\n"
        assert matcher.framing == Lines(b"\n")
        assert matcher.max_pong == 256
        assert matcher.held == b""
        assert matcher.at_boundary
        assert isinstance(matcher, PongMatcher)
        assert repr(matcher) == "MessagePongs(b'PONG\\n', Lines(delimiter=b'\\n'))"
        assert MessagePongs(startswith_pong, Lines()).pong is startswith_pong

    def test_framings_are_values(self) -> None:
        assert isinstance(FixedSize(3), Framer)
        assert isinstance(LengthPrefixed(), Framer)
        assert isinstance(Netstrings(), Framer)
        assert not isinstance(Lines(), Framer)
        assert LengthPrefixed() == LengthPrefixed(4, length_size=4)
        assert hash(LengthPrefixed()) == hash(LengthPrefixed(4, length_size=4))
        assert loose(Lines)(bytearray(b"\r\n")).delimiter == b"\r\n"
        assert repr(LengthPrefixed(2)) == (
            "LengthPrefixed(header_size=2, byteorder='big', length_offset=0, length_size=2, "
            "includes_header=False, adjustment=0)"
        )
        with pytest.raises(dataclasses.FrozenInstanceError):
            Lines().delimiter = b"x"  # type: ignore[misc]


class EqualToAll:
    """A framer of one's own that claims to equal every other: never shared by value."""

    def __init__(self, size: int) -> None:
        self.size = size

    def message_length(self, head: bytes) -> int:
        return self.size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EqualToAll)

    def __hash__(self) -> int:
        return 0


class TestSmallMatchers:
    """A matcher holds only its per-stream state; what its arguments imply is shared."""

    @pytest.mark.parametrize(
        "build",
        [
            lambda: make_pong_matcher(b"PONG\n"),
            lambda: MessagePongs(b"PONG\r\n", Lines(b"\r\n")),
            lambda: MessagePongs(b"PONG!", FixedSize(5)),
            lambda: MessagePongs(b"PONG" * 1000, FixedSize(4000)),
            lambda: MessagePongs(encode(LengthPrefixed(), b"PONG"), LengthPrefixed()),
            lambda: MessagePongs(startswith_pong, Netstrings(), max_pong=12),
        ],
    )
    def test_instance_size_bound(self, build: Callable[[], object]) -> None:
        matcher = build()
        assert isinstance(matcher, MessagePongs)
        assert sys.getsizeof(matcher) <= 80
        assert not hasattr(matcher, "__dict__")
        # Idle, the per-stream values are shared objects: b"", 0 or the spec's own size.
        shared = (b"", 0, matcher._spec.fixed)
        for name in MessagePongs.__slots__:
            if name != "_spec":
                value = getattr(matcher, name)
                assert any(value is item for item in shared), name

    def test_equal_arguments_share_a_spec_not_state(self) -> None:
        first = make_pong_matcher(b"PONG\n")
        second = MessagePongs(b"PONG\n", Lines())
        assert isinstance(first, MessagePongs)
        assert first._spec is second._spec
        assert first.feed(b"x\nPO", 1) == (b"x\n", 0)
        assert first.held == b"PO"
        assert second.held == b""
        assert second.at_boundary
        assert second.feed(b"PONG\n", 1) == (b"", 1)
        assert first.feed(b"NG\n", 1) == (b"", 1)

    def test_own_framers_are_shared_only_with_themselves(self) -> None:
        def never(message: bytes) -> bool:
            return False

        two, three = EqualToAll(2), EqualToAll(3)
        by_two = MessagePongs(never, two)
        by_three = MessagePongs(never, three)
        assert by_two.framing is two
        assert by_three.framing is three
        assert by_two.feed(b"abc", 0) == (b"abc", 0)
        assert by_three.feed(b"abc", 0) == (b"abc", 0)
        assert not by_two.at_boundary
        assert by_three.at_boundary

    def test_cached_spec_does_not_skip_checks(self) -> None:
        MessagePongs(startswith_pong, Lines(), max_pong=1)
        with pytest.raises(InvalidSettingType, match="max_pong"):
            loose(MessagePongs)(startswith_pong, Lines(), max_pong=True)
        with pytest.raises(InvalidSetting, match="pong"):
            loose(MessagePongs)(bytearray(b"PONG"), Lines())

    def test_spec_cache_is_bounded(self) -> None:
        matchers = [
            MessagePongs(startswith_pong, Lines(), max_pong=size)
            for size in range(1, framing_module._MAX_SPECS * 2)
        ]
        assert len(framing_module._SPECS) <= framing_module._MAX_SPECS
        assert [m.max_pong for m in matchers] == list(range(1, framing_module._MAX_SPECS * 2))


# ------------------------------------------------------------- validation


def loose(function: Callable[..., object]) -> Any:
    """``function`` without its signature, to call it with the wrong types on purpose."""
    return function


@pytest.mark.parametrize(
    ("build", "error", "field"),
    [
        (lambda: loose(Lines)(b""), InvalidSetting, "delimiter"),
        (lambda: loose(Lines)(b"x" * 17), InvalidSetting, "delimiter"),
        (lambda: loose(Lines)("\n"), InvalidSettingType, "delimiter"),
        (lambda: loose(FixedSize)(0), InvalidSetting, "size"),
        (lambda: loose(FixedSize)(2.0), InvalidSettingType, "size"),
        (lambda: loose(FixedSize)(True), InvalidSettingType, "size"),
        (lambda: loose(LengthPrefixed)(0), InvalidSetting, "header_size"),
        (lambda: loose(LengthPrefixed)(MAX_HEAD + 1), InvalidSetting, "header_size"),
        (lambda: loose(LengthPrefixed)(3), InvalidSetting, "length_size"),
        (lambda: loose(LengthPrefixed)(4, byteorder="middle"), InvalidSetting, "byteorder"),
        (lambda: loose(LengthPrefixed)(4, byteorder=1), InvalidSettingType, "byteorder"),
        (lambda: loose(LengthPrefixed)(4, length_offset=4), InvalidSetting, "length_offset"),
        (lambda: loose(LengthPrefixed)(4, length_offset=-1), InvalidSetting, "length_offset"),
        (lambda: loose(LengthPrefixed)(4, length_size=3), InvalidSetting, "length_size"),
        (
            lambda: loose(LengthPrefixed)(4, length_offset=2, length_size=4),
            InvalidSetting,
            "length_size",
        ),
        (
            lambda: loose(LengthPrefixed)(4, includes_header=1),
            InvalidSettingType,
            "includes_header",
        ),
        (lambda: loose(LengthPrefixed)(4, adjustment=0.5), InvalidSettingType, "adjustment"),
        (lambda: loose(MessagePongs)(b"", Lines()), InvalidSetting, "pong"),
        (lambda: loose(MessagePongs)("PONG\n", Lines()), InvalidSettingType, "pong"),
        (lambda: loose(MessagePongs)(5, Lines()), InvalidSettingType, "pong"),
        (lambda: loose(MessagePongs)(b"PONG", Lines()), InvalidSetting, "pong"),
        (lambda: loose(MessagePongs)(b"A\nB\n", Lines()), InvalidSetting, "pong"),
        (lambda: loose(MessagePongs)(b"PONG\r\n\r\n", Lines(b"\r\n")), InvalidSetting, "pong"),
        (lambda: loose(MessagePongs)(b"aaa", Lines(b"aa")), InvalidSetting, "pong"),
        (lambda: loose(MessagePongs)(b"PONG", FixedSize(5)), InvalidSetting, "pong"),
        (
            lambda: loose(MessagePongs)(b"\x00\x00\x00\x05PONG", LengthPrefixed()),
            InvalidSetting,
            "pong",
        ),
        (lambda: loose(MessagePongs)(b"\x00\x00", LengthPrefixed()), InvalidSetting, "pong"),
        (
            lambda: loose(MessagePongs)(b"\x00\x01", LengthPrefixed(2, includes_header=True)),
            InvalidSetting,
            "pong",
        ),
        (lambda: loose(MessagePongs)(b"4:PONG", Netstrings()), InvalidSetting, "pong"),
        (lambda: loose(MessagePongs)(b"PONG\n", None), InvalidSettingType, "framing"),
        (lambda: loose(MessagePongs)(b"PONG\n", b"\n"), InvalidSettingType, "framing"),
        (lambda: loose(MessagePongs)(b"PONG\n", Lines), InvalidSettingType, "framing"),
        (
            lambda: loose(MessagePongs)(startswith_pong, Lines(), max_pong=0),
            InvalidSetting,
            "max_pong",
        ),
        (
            lambda: loose(MessagePongs)(b"P\n", Lines()).feed(b"x", -1),
            InvalidSetting,
            "outstanding",
        ),
        (
            lambda: loose(MessagePongs)(b"P\n", Lines()).feed(b"x", 1.0),
            InvalidSettingType,
            "outstanding",
        ),
        (
            lambda: loose(MessagePongs)(b"P\n", Lines()).feed(b"x", True),
            InvalidSettingType,
            "outstanding",
        ),
        (
            lambda: loose(MessagePongs)(b"P\n", Lines()).leading_pongs(b"x", -1),
            InvalidSetting,
            "outstanding",
        ),
        (lambda: loose(make_pong_matcher)(b""), InvalidSetting, "pong"),
        (lambda: loose(make_pong_matcher)("PONG\n"), InvalidSettingType, "pong"),
        (lambda: loose(make_pong_matcher)(5), InvalidSettingType, "pong"),
        (lambda: loose(make_pong_matcher)(b"PONG"), InvalidSetting, "framing"),
        (lambda: loose(make_pong_matcher)(b"\x00\x04PONG"), InvalidSetting, "framing"),
        (lambda: loose(make_pong_matcher)(startswith_pong), InvalidSetting, "framing"),
        (lambda: loose(make_pong_matcher)(None, Lines()), InvalidSetting, "framing"),
        (lambda: loose(make_pong_matcher)(b"PONG\n", "lines"), InvalidSettingType, "framing"),
        (lambda: loose(make_pong_matcher)(b"PONG\n", FixedSize), InvalidSettingType, "framing"),
        (
            lambda: loose(make_pong_matcher)(MessagePongs(b"P\n", Lines()), Lines()),
            InvalidSetting,
            "framing",
        ),
    ],
)
def test_bad_arguments_name_their_field(
    build: Callable[[], object], error: type[InvalidSetting], field: str
) -> None:
    with pytest.raises(error) as caught:
        build()
    assert caught.value.field == field
    assert field in str(caught.value)


def test_text_pong_hint() -> None:
    with pytest.raises(InvalidSettingType, match=r"encode text first, e\.g\. b'PONG\\n'"):
        loose(make_pong_matcher)("PONG\n")


def test_missing_framing_explains_why() -> None:
    with pytest.raises(InvalidSetting) as caught:
        make_pong_matcher(b"PONG")
    message = str(caught.value)
    assert "whole message" in message
    assert "FixedSize" in message
    assert "pong=None" in message


class TestMakePongMatcher:
    def test_none_means_no_filtering(self) -> None:
        assert make_pong_matcher(None) is None

    @pytest.mark.parametrize(
        ("pong", "delimiter"),
        [(b"PONG\n", b"\n"), (b"PONG\r\n", b"\r\n"), (bytearray(b"\n"), b"\n")],
    )
    def test_newline_pongs_get_lines(self, pong: bytes, delimiter: bytes) -> None:
        matcher = make_pong_matcher(pong)
        assert isinstance(matcher, MessagePongs)
        assert matcher.framing == Lines(delimiter)
        assert matcher.pong == bytes(pong)

    def test_explicit_framing(self) -> None:
        matcher = make_pong_matcher(memoryview(b"PONG"), FixedSize(4))
        assert isinstance(matcher, MessagePongs)
        assert matcher.framing == FixedSize(4)
        assert matcher.feed(b"PINGPONG", 1) == (b"PING", 1)

    def test_predicate_with_framing(self) -> None:
        matcher = make_pong_matcher(startswith_pong, Lines())
        assert isinstance(matcher, MessagePongs)
        assert matcher.pong is startswith_pong

    def test_custom_matcher_returned_as_is(self) -> None:
        class Custom:
            def feed(self, data: bytes, outstanding: int) -> tuple[bytes, int]:
                return data, 0

            def flush(self) -> bytes:
                return b""

        custom = Custom()
        assert make_pong_matcher(custom) is custom
        matcher = MessagePongs(b"P\n", Lines())
        assert make_pong_matcher(matcher) is matcher
