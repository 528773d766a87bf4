"""Pongs recognised only as whole messages: framings, and a pong matcher that keeps to them.

The heartbeat's pong travels inside the application's own byte stream, so it has to be taken
out before the application reads. Searching for the pong's bytes anywhere cuts application
data that merely contains them (``b"ping-pong score: PING PONG\\n"``). Here the inbound stream
is split into messages by a framing (:class:`Lines`, :class:`FixedSize`,
:class:`LengthPrefixed` or your own :class:`Framer`), every byte is tracked so that the start
of the next message is always known, and a pong is a *whole message* equal to the pong bytes
(or accepted by a predicate).

Never touched: every byte that is not a removed pong reaches the application exactly once,
in order and unchanged. A message is removed only while a pong is owed (``outstanding > 0``),
at most one per owed pong; bytes are held back only while a pong is owed and only as long as
they may still turn out to be one.

The ambiguity that remains: if the application itself receives messages equal to the pong,
one that arrives while a ping is outstanding cannot be told from the pong by any in-band
filter; it is removed in the pong's place (and the real pong then reaches the application).
Ways out: make each ping carry a token that the pong must echo and match with a predicate
pong (``MessagePongs(lambda m: m == b"PONG " + token + b"\\n", Lines())``), or use
``pong=None`` (any inbound byte is life; nothing is filtered).

Pure: no I/O, no clock, no threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from types import MethodType
from typing import Literal, Protocol, TypeAlias, cast, runtime_checkable

from keepalive._validate import INT_MAX, flag, positive_int
from keepalive.errors import InvalidSetting, InvalidSettingType, KeepaliveError

__all__ = [
    "MAX_HEAD",
    "FixedSize",
    "Framer",
    "Framing",
    "FramingError",
    "LengthPrefixed",
    "Lines",
    "MessagePongs",
    "PongMatcher",
    "PongPredicate",
    "PongSource",
    "make_pong_matcher",
    "pong_matcher_factory",
]

MAX_HEAD = 64 * 1024
"""Bytes a :class:`Framer` may need to see before it must know a message's length.

Bounds the bytes kept per connection while a message's length is unknown; a framer that
still answers ``None`` with this many bytes raises :class:`FramingError`.
"""

# First head offered to a user framer; grown 16-fold (up to MAX_HEAD) while it answers None,
# so that many small messages in one chunk are not each copied 64 KiB deep.
_FIRST_HEAD = 64

_MAX_DELIMITER = 16

_LINES, _FIXED, _FRAMED = 0, 1, 2

_ENCODE_HINT = "encode text first, e.g. b'PONG\\n'"


class FramingError(KeepaliveError, ValueError):
    """Inbound bytes break the declared framing (say, a length field below the header size).

    Message boundaries are lost from there on, so pongs can no longer be found safely:
    close the connection.
    """


@runtime_checkable
class Framer(Protocol):
    """Tells where a message ends from its first bytes: the framing of your own protocol.

    :class:`FixedSize` and :class:`LengthPrefixed` are framers; :class:`Lines` is a framing
    too but is matched by a delimiter scan instead.
    """

    def message_length(self, head: bytes) -> int | None:
        """The total length in bytes (>= 1) of the message that starts with ``head``.

        ``head`` holds at least one byte: as many of the message's first bytes as have
        arrived, possibly more than the whole message. Return ``None`` if more bytes are
        needed to tell; the answer must not change as ``head`` grows. Raise
        :class:`FramingError` for bytes that break the framing.
        """
        ...


@dataclass(frozen=True, slots=True)
class Lines:
    """Messages end with ``delimiter`` (1 to 16 bytes), which is part of the message.

    A message ends at the first occurrence of the delimiter after its start, wherever the
    inbound chunks happen to split it.
    """

    delimiter: bytes = b"\n"

    def __post_init__(self) -> None:
        value: object = self.delimiter
        allowed = f"a bytes delimiter of 1 to {_MAX_DELIMITER} bytes"
        if not isinstance(value, (bytes, bytearray, memoryview)):
            hint = _ENCODE_HINT if isinstance(value, str) else None
            raise InvalidSettingType("delimiter", value, allowed, hint=hint)
        delimiter = bytes(value)
        if not 1 <= len(delimiter) <= _MAX_DELIMITER:
            raise InvalidSetting("delimiter", value, allowed)
        object.__setattr__(self, "delimiter", delimiter)


@dataclass(frozen=True, slots=True)
class FixedSize:
    """Every message is exactly ``size`` bytes."""

    size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", positive_int("size", self.size))

    def message_length(self, head: bytes) -> int:
        """Always ``size``: the head need not be looked at."""
        return self.size


@dataclass(frozen=True, slots=True)
class LengthPrefixed:
    """Messages start with a ``header_size``-byte header holding the length of the rest.

    The length field is an unsigned integer of ``length_size`` bytes (1, 2, 4 or 8; by
    default the rest of the header after ``length_offset``) at ``length_offset`` in the
    header, in ``byteorder``. The message is ``header_size`` + field + ``adjustment`` bytes
    long, or field + ``adjustment`` bytes if ``includes_header`` (the field counts the header
    too). A resulting length below ``header_size`` raises :class:`FramingError`.
    """

    header_size: int = 4
    _: KW_ONLY
    byteorder: Literal["big", "little"] = "big"
    length_offset: int = 0
    length_size: int | None = None
    includes_header: bool = False
    adjustment: int = 0
    _end: int = field(init=False, repr=False, compare=False, default=0)
    _add: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        header_size = positive_int("header_size", self.header_size, maximum=MAX_HEAD)
        byteorder: object = self.byteorder
        if not isinstance(byteorder, str):
            raise InvalidSettingType("byteorder", byteorder, "'big' or 'little'")
        if byteorder not in ("big", "little"):
            raise InvalidSetting("byteorder", byteorder, "'big' or 'little'")
        offset = positive_int(
            "length_offset", self.length_offset, minimum=0, maximum=header_size - 1
        )
        if self.length_size is None:
            size = header_size - offset
            if size not in (1, 2, 4, 8):
                raise InvalidSetting(
                    "length_size",
                    size,
                    "1, 2, 4 or 8 bytes",
                    hint="by default header_size - length_offset; pass length_size",
                )
        else:
            size = positive_int("length_size", self.length_size, maximum=8)
            if size not in (1, 2, 4, 8):
                raise InvalidSetting("length_size", size, "1, 2, 4 or 8 bytes")
            if offset + size > header_size:
                raise InvalidSetting(
                    "length_size",
                    size,
                    f"at most header_size - length_offset = {header_size - offset} bytes",
                )
        includes_header = flag("includes_header", self.includes_header)
        adjustment = positive_int("adjustment", self.adjustment, minimum=-INT_MAX, maximum=INT_MAX)
        object.__setattr__(self, "header_size", header_size)
        object.__setattr__(self, "length_offset", offset)
        object.__setattr__(self, "length_size", size)
        object.__setattr__(self, "includes_header", includes_header)
        object.__setattr__(self, "adjustment", adjustment)
        object.__setattr__(self, "_end", offset + size)
        object.__setattr__(self, "_add", adjustment + (0 if includes_header else header_size))

    def message_length(self, head: bytes) -> int | None:
        """The message's total length from its header; ``None`` until the header is in."""
        header_size = self.header_size
        if len(head) < header_size:
            return None
        value = int.from_bytes(head[self.length_offset : self._end], self.byteorder)
        total = value + self._add
        if total < header_size:
            raise FramingError(
                f"length field {value} in header {head[:header_size]!r} gives a message of "
                f"{total} bytes, shorter than the {header_size}-byte header ({self!r})"
            )
        return total


Framing: TypeAlias = Lines | Framer
"""How the inbound stream is split into messages."""

PongPredicate: TypeAlias = Callable[[bytes], bool]
"""Tells whether a whole message (delimiter or header included) is a pong."""


@runtime_checkable
class PongMatcher(Protocol):
    """Finds and removes pongs in an inbound byte stream, for drivers that filter pongs.

    Rules every implementation must keep: a pong is only ever a whole message at a message
    boundary of the inbound stream, never bytes inside an application message; never lose,
    alter, duplicate or reorder an application byte; remove at most ``outstanding`` pongs per
    call; bytes may be held back across calls only while ``outstanding > 0`` and must be
    returned by a later ``feed`` or by ``flush``. :class:`MessagePongs` is the library's own.
    """

    def feed(self, data: bytes, outstanding: int) -> tuple[bytes, int]:
        """Take inbound ``data``; return (bytes for the application, pongs removed).

        ``outstanding`` is :attr:`Heartbeat.outstanding`: pings whose pong is still due.
        """
        ...

    def flush(self) -> bytes:
        """Return every byte held back (at end of stream, or when giving up on pongs)."""
        ...


@dataclass(frozen=True, slots=True, eq=False)
class _Spec:
    """All that a :class:`MessagePongs` derives from its (pong, framing, max_pong).

    Immutable and shared by every matcher of the same spec (see :func:`_spec`), so that a
    matcher itself holds only its per-stream state.
    """

    framing: Framing
    kind: int  # _LINES, _FIXED or _FRAMED
    token: bytes | None  # a bytes pong
    predicate: PongPredicate | None  # or a predicate pong
    max_pong: int
    delimiter: bytes = b""  # Lines
    single: bytes | None = None  # a one-byte delimiter (the inlined fast path)
    # A delimiter whose end can begin another one (b"\n\n", b"||") can occur overlapping
    # itself, so the last occurrence is not always a message end.
    bordered: bool = False
    fixed: int = 0  # FixedSize: the size (also the known total of every message)
    framer: Framer | None = None  # FixedSize and other framers
    first_head: int = _FIRST_HEAD  # framers: the first head offered


def _make_spec(
    pong: bytes | bytearray | memoryview | PongPredicate, framing: Framing, max_pong: int
) -> _Spec:
    """Check a matcher's arguments (framing, then max_pong, then pong) and derive its spec."""
    delimiter = b""
    single: bytes | None = None
    bordered = False
    fixed = 0
    first_head = _FIRST_HEAD
    framer: Framer | None = None
    if isinstance(framing, Lines):
        kind = _LINES
        delimiter = framing.delimiter
        if len(delimiter) == 1:
            single = delimiter
        bordered = any(delimiter[:i] == delimiter[-i:] for i in range(1, len(delimiter)))
    elif isinstance(framing, FixedSize):
        kind = _FIXED
        fixed = framing.size
    elif isinstance(framing, type):
        raise InvalidSettingType(
            "framing", framing, _FRAMING_ALLOWED, hint="pass an instance, e.g. Lines()"
        )
    elif isinstance(framing, Framer):
        kind = _FRAMED
        framer = framing
        if isinstance(framing, LengthPrefixed):
            first_head = framing.header_size
    else:
        raise InvalidSettingType("framing", framing, _FRAMING_ALLOWED)
    checked_max_pong = positive_int("max_pong", max_pong, maximum=MAX_HEAD)
    token: bytes | None = None
    predicate: PongPredicate | None = None
    if isinstance(pong, (bytes, bytearray, memoryview)):
        token = _pong_bytes(pong)
        _check_whole_message(token, framing)
    elif isinstance(pong, str):
        raise InvalidSettingType("pong", pong, _PONG_ALLOWED, hint=_ENCODE_HINT)
    elif callable(pong):
        predicate = pong
    else:
        raise InvalidSettingType("pong", pong, _PONG_ALLOWED)
    return _Spec(
        framing,
        kind,
        token,
        predicate,
        checked_max_pong,
        delimiter=delimiter,
        single=single,
        bordered=bordered,
        fixed=fixed,
        framer=framer,
        first_head=first_head,
    )


# Specs by (pong, framing, max_pong) key; cleared when full (a handful of specs is usual).
_SPECS: dict[tuple[object, object, int], _Spec] = {}
_MAX_SPECS = 256

# Framings that are immutable values: equal ones are interchangeable, so they share a spec.
# Anything else (a framer of your own, a subclass) shares one only with itself.
_VALUE_FRAMINGS = (Lines, FixedSize, LengthPrefixed)


def _spec(
    pong: bytes | bytearray | memoryview | PongPredicate, framing: Framing, max_pong: int
) -> _Spec:
    """The shared spec for these arguments: made (and checked) once, then looked up.

    Keys compare bytes pongs and the library's own framings by value, bound methods as
    Python does (same object, same function), and anything else by identity (the cached
    spec holds it, so its id cannot be reused while the key exists). An argument that is
    not of an exact keyable type (a bytearray pong, a bool max_pong) is checked afresh.
    """
    if max_pong.__class__ is not int:
        return _make_spec(pong, framing, max_pong)
    pong_key: object
    if pong.__class__ is bytes or pong.__class__ is MethodType:
        pong_key = pong
    elif callable(pong):
        pong_key = id(pong)
    else:
        return _make_spec(pong, framing, max_pong)
    framing_key = framing if framing.__class__ in _VALUE_FRAMINGS else id(framing)
    key = (pong_key, framing_key, max_pong)
    spec = _SPECS.get(key)
    if spec is None:
        spec = _make_spec(pong, framing, max_pong)
        if len(_SPECS) >= _MAX_SPECS:
            _SPECS.clear()
        _SPECS[key] = spec
    return spec


class MessagePongs:
    """Removes pong messages from an inbound stream split by ``framing``: a :class:`PongMatcher`.

    ``pong`` is the pong message's bytes (a message is a pong if it equals them; they must
    be exactly one whole message under ``framing``) or a :data:`PongPredicate` called with
    each whole message that may be a pong; then ``max_pong`` bounds a pong's length, and
    longer messages are never pongs and never held.

    Boundaries are tracked over every byte fed, pongs owed or not. A message is removed if
    it is a pong and starts while pongs are still owed in that call (at most ``outstanding``
    per call, in stream order); otherwise it is passed on. While pongs are owed, a message
    that has begun and may still be a pong is held back (:attr:`held`) until it ends or is
    known not to be one; with nothing owed, held bytes are released and data passes straight
    through.

    Small (a few slots; thousands live in one process): everything derived from the
    arguments is in a :class:`_Spec` shared by the matchers of equal arguments.
    """

    __slots__ = ("_held", "_offset", "_part", "_spec", "_total")

    def __init__(
        self,
        pong: bytes | bytearray | memoryview | PongPredicate,
        framing: Framing,
        *,
        max_pong: int = 256,
    ) -> None:
        spec = _spec(pong, framing, max_pong)
        self._spec = spec
        # The current message: bytes of it seen so far (0: at a boundary); its total length
        # (0: not known yet); a part of it: for framers, its first bytes while the length is
        # unknown; for multi-byte delimiters, its last len(delimiter) - 1 bytes (a framing
        # needs only one of the two).
        self._offset = 0
        self._total = spec.fixed
        self._part = b""
        # The current message so far, while it may still be a pong (then _offset > 0).
        self._held = b""

    # ------------------------------------------------------------- read-outs

    @property
    def pong(self) -> bytes | PongPredicate:
        """The pong message's bytes, or the predicate that recognises one."""
        spec = self._spec
        if spec.token is not None:
            return spec.token
        assert spec.predicate is not None
        return spec.predicate

    @property
    def framing(self) -> Framing:
        """How the inbound stream is split into messages."""
        return self._spec.framing

    @property
    def max_pong(self) -> int:
        """The longest message a predicate pong may be (unused with a bytes pong)."""
        return self._spec.max_pong

    @property
    def held(self) -> bytes:
        """Bytes held back: the start of a message that may still be a pong."""
        return self._held

    @property
    def at_boundary(self) -> bool:
        """Whether the next byte fed starts a new message."""
        return self._offset == 0

    def __repr__(self) -> str:
        return f"MessagePongs({self.pong!r}, {self._spec.framing!r})"

    # ------------------------------------------------------------- matching

    def feed(self, data: bytes, outstanding: int) -> tuple[bytes, int]:
        """Take inbound ``data``; return (bytes for the application, pongs removed).

        ``outstanding`` is :attr:`Heartbeat.outstanding` (pings whose pong is still due);
        a negative count raises :class:`~keepalive.errors.InvalidSetting`. Bytes that break
        the framing raise :class:`FramingError`; the boundaries are lost then, and so is this
        matcher (close the connection).
        """
        if data.__class__ is not bytes:
            data = bytes(data)
        if outstanding.__class__ is not int:
            outstanding = _outstanding(outstanding)
        if outstanding <= 0:
            if outstanding:  # below 0
                raise InvalidSetting("outstanding", outstanding, "a whole number >= 0")
            # The common case: nothing owed, so only the boundary is tracked.
            single = self._spec.single
            if single is not None:
                found = data.rfind(single)
                self._offset = self._offset + len(data) if found < 0 else len(data) - found - 1
            else:
                self._skip(data, 0)
            held = self._held
            if held:
                self._held = b""
                return held + data, 0
            return data, 0
        token = self._spec.token
        if token is not None:
            if self._offset == 0 and data == token:
                return b"", 1  # the other common case: exactly the owed pong
            return self._scan_token(token, data, outstanding)
        return self._scan_predicate(data, outstanding)

    def flush(self) -> bytes:
        """Return and forget the bytes held back (at end of stream, or giving up on pongs).

        They stay part of the current message for boundary tracking; that message is no
        longer a pong candidate.
        """
        held, self._held = self._held, b""
        return held

    def leading_pongs(self, data: bytes, outstanding: int) -> tuple[int, int]:
        """(bytes, pongs) of the complete pongs at the very start of ``data``; changes nothing.

        For drivers that peek at unread bytes (``MSG_PEEK``) to consume only pongs: at most
        ``outstanding`` pongs are counted, and only at a boundary with nothing held (else
        ``(0, 0)``). Feeding exactly those bytes next returns ``(b"", pongs)``.
        """
        if data.__class__ is not bytes:
            data = bytes(data)
        if outstanding.__class__ is not int:
            outstanding = _outstanding(outstanding)
        if outstanding < 0:
            raise InvalidSetting("outstanding", outstanding, "a whole number >= 0")
        if self._offset or not outstanding:
            return 0, 0
        pos = count = 0
        spec = self._spec
        token = spec.token
        if token is not None:
            size = len(token)
            while count < outstanding and data.startswith(token, pos):
                pos += size
                count += 1
            return pos, count
        predicate = spec.predicate
        assert predicate is not None
        while count < outstanding and pos < len(data):
            end = self._peek_end(data, pos)
            if end < 0 or not predicate(data[pos:end]):
                break
            pos = end
            count += 1
        return pos, count

    # ------------------------------------------------------------- internals

    def _scan_token(self, token: bytes, data: bytes, outstanding: int) -> tuple[bytes, int]:
        spec = self._spec
        n = len(data)
        size = len(token)
        pieces: list[bytes] = []
        removed = 0
        pos = 0
        run = 0  # start of the bytes not yet passed on
        limit = n  # end of the bytes to pass on (the rest is held)
        held = self._held
        if held:
            rest = token[len(held) :]
            if data.startswith(rest):
                self._held = b""
                self._reset()
                removed = 1
                pos = run = len(rest)
            else:
                self._held = b""
                end = self._end(data, 0)
                if end == n and n < len(rest) and rest.startswith(data):
                    self._held = held + data  # still a prefix of the pong
                    return b"", 0
                pieces.append(held)
                pos = end
        if spec.kind == _LINES and not spec.bordered:
            # Lines: find the pong's bytes (in C) and keep those that start a message, rather
            # than walking message by message.
            delimiter = spec.delimiter
            width = len(delimiter)
            search = pos
            while removed < outstanding:
                found = data.find(token, search)
                if found < 0:
                    break
                if found == pos:
                    starts = self._offset == 0
                elif found - pos >= width:
                    starts = data.startswith(delimiter, found - width)
                else:  # a delimiter just before it may have begun in an earlier chunk
                    starts = (self._part + data[pos:found]).endswith(delimiter)
                if not starts:
                    search = found + 1
                    continue
                if found > run:
                    pieces.append(data[run:found])
                removed += 1
                pos = search = run = found + size
                self._reset()
            self._skip(data, pos)
            start = n - self._offset  # where the unfinished last message began
            if (
                removed < outstanding
                and pos <= start < n
                and n - start < size
                and data.startswith(token[: n - start], start)
            ):
                self._held = data[start:]
                limit = start
            return _joined(data, pieces, run, limit), removed
        while pos < n:
            if removed == outstanding:
                self._skip(data, pos)  # nothing more owed: only track the boundary
                break
            if self._offset == 0:
                if data.startswith(token, pos):
                    if pos > run:
                        pieces.append(data[run:pos])
                    removed += 1
                    pos += size
                    run = pos
                    continue
                if n - pos < size and data.endswith(token[: n - pos]):
                    end = self._end(data, pos)
                    if end == n:
                        self._held = data[pos:]
                        limit = pos
                        break
                    pos = end
                    continue
            pos = self._end(data, pos)
        return _joined(data, pieces, run, limit), removed

    def _scan_predicate(self, data: bytes, outstanding: int) -> tuple[bytes, int]:
        spec = self._spec
        predicate = spec.predicate
        assert predicate is not None
        max_pong = spec.max_pong
        n = len(data)
        pieces: list[bytes] = []
        removed = 0
        pos = 0
        run = 0
        limit = n
        held = self._held
        if held:
            self._held = b""
            pos = self._end(data, 0)
            if self._offset == 0:
                if len(held) + pos <= max_pong and predicate(held + data[:pos]):
                    removed = 1
                    run = pos
                else:
                    pieces.append(held)
            elif self._could_be_pong():
                self._held = held + data
                return b"", 0
            else:
                return held + data, 0
        elif self._offset:
            pos = self._end(data, 0)  # the rest of a message that is no pong
        while pos < n:
            if removed == outstanding:
                self._skip(data, pos)
                break
            start = pos
            pos = self._end(data, pos)
            if self._offset == 0:
                if pos - start <= max_pong and predicate(data[start:pos]):
                    if start > run:
                        pieces.append(data[run:start])
                    removed += 1
                    run = pos
            elif self._could_be_pong():
                self._held = data[start:]
                limit = start
                break
        return _joined(data, pieces, run, limit), removed

    def _could_be_pong(self) -> bool:
        """Whether the unfinished current message may still end within ``max_pong`` bytes."""
        total = self._total
        max_pong = self._spec.max_pong
        return self._offset < max_pong and (total == 0 or total <= max_pong)

    def _reset(self) -> None:
        self._offset = 0
        self._total = self._spec.fixed
        self._part = b""

    def _end(self, data: bytes, pos: int) -> int:
        """Consume the current message from ``pos``; return where it ends (``len(data)``: later)."""
        if self._spec.kind == _LINES:
            return self._line_end(data, pos)
        return self._frame_end(data, pos)

    def _skip(self, data: bytes, pos: int) -> None:
        """Consume ``data[pos:]`` with as little Python work per message as possible."""
        spec = self._spec
        kind = spec.kind
        if kind == _LINES:
            delimiter = spec.delimiter
            if len(delimiter) == 1:
                found = data.rfind(delimiter, pos)
                if found < 0:
                    self._offset += len(data) - pos
                else:
                    self._offset = len(data) - found - 1
                return
            if not spec.bordered:
                self._skip_lines(data, pos)
                return
        elif kind == _FIXED:
            self._offset = (self._offset + len(data) - pos) % spec.fixed
            return
        n = len(data)
        while pos < n:
            pos = self._end(data, pos)

    def _skip_lines(self, data: bytes, pos: int) -> None:
        # Occurrences of a delimiter without a border cannot overlap, so each one ends a
        # message and the last one found from the right is the last boundary.
        delimiter = self._spec.delimiter
        found = data.rfind(delimiter, pos)
        if found >= 0:
            self._after_line(data, found + len(delimiter))
            return
        tail = self._part
        if tail:
            found = (tail + data[pos : pos + len(delimiter) - 1]).find(delimiter)
            if found >= 0:
                self._after_line(data, pos + found + len(delimiter) - len(tail))
                return
        self._extend_line(data, pos)

    def _line_end(self, data: bytes, pos: int) -> int:
        delimiter = self._spec.delimiter
        size = len(delimiter)
        if size > 1 and self._part:
            # A delimiter split across chunks: it starts in the tail kept from before.
            tail = self._part
            found = (tail + data[pos : pos + size - 1]).find(delimiter)
            if found >= 0:
                self._offset = 0
                self._part = b""
                return pos + found + size - len(tail)
        found = data.find(delimiter, pos)
        if found >= 0:
            self._offset = 0
            self._part = b""
            return found + size
        self._extend_line(data, pos)
        return len(data)

    def _after_line(self, data: bytes, end: int) -> None:
        """A line ended at ``end``; the rest of ``data`` (no delimiter) starts the next."""
        n = len(data)
        self._offset = n - end
        self._part = data[max(end, n - len(self._spec.delimiter) + 1) :] if end < n else b""

    def _extend_line(self, data: bytes, pos: int) -> None:
        """All of ``data[pos:]`` continues the current line."""
        n = len(data)
        self._offset += n - pos
        keep = len(self._spec.delimiter) - 1
        if keep:
            if n - pos >= keep:
                self._part = data[n - keep :]
            else:
                self._part = (self._part + data[pos:])[-keep:]

    def _frame_end(self, data: bytes, pos: int) -> int:
        n = len(data)
        if pos >= n:
            return n
        total = self._total
        if total == 0:
            total = self._resolve(data, pos)
            if total == 0:
                return n
        end = pos + total - self._offset
        if end <= n:
            self._offset = 0
            self._total = self._spec.fixed
            return end
        self._offset += n - pos
        self._total = total
        return n

    def _resolve(self, data: bytes, pos: int) -> int:
        """Ask the framer for the current message's length (0: not yet known; head kept)."""
        spec = self._spec
        framer = spec.framer
        assert framer is not None
        known = self._part
        asked = len(known)  # the framer already answered None for this many bytes
        want = max(spec.first_head, asked + 1)
        n = len(data)
        while True:
            take = min(want, MAX_HEAD) - len(known)
            head = known + data[pos : pos + take] if known else data[pos : pos + take]
            length = framer.message_length(head)
            if length is not None:
                if isinstance(length, bool) or not isinstance(length, int) or length <= asked:
                    raise FramingError(
                        f"{framer!r}.message_length() returned {length!r} for a "
                        f"{len(head)}-byte head after None for {asked} bytes: expected a "
                        f"length > {asked} or None"
                    )
                self._part = b""
                return length
            if len(head) >= MAX_HEAD:
                raise FramingError(
                    f"{framer!r}.message_length() still returned None for a {len(head)}-byte "
                    f"head (at most MAX_HEAD = {MAX_HEAD} bytes may be needed)"
                )
            if pos + take >= n:
                self._part = head
                self._offset = len(head)
                return 0
            asked = len(head)
            want = asked * 16

    def _peek_end(self, data: bytes, pos: int) -> int:
        """End of the message at boundary ``pos`` if it is complete and <= max_pong; else -1."""
        spec = self._spec
        max_pong = spec.max_pong
        if spec.kind == _LINES:
            delimiter = spec.delimiter
            found = data.find(delimiter, pos, pos + max_pong)
            return -1 if found < 0 else found + len(delimiter)
        if spec.kind == _FIXED:
            length: object = spec.fixed
        else:
            framer = spec.framer
            assert framer is not None
            length = framer.message_length(data[pos : pos + max(spec.first_head, max_pong)])
            if length is None:
                return -1
            if isinstance(length, bool) or not isinstance(length, int) or length < 1:
                raise FramingError(
                    f"{framer!r}.message_length() returned {length!r}: expected a length "
                    "> 0 or None"
                )
        assert isinstance(length, int)
        end = pos + length
        return end if length <= max_pong and end <= len(data) else -1


def make_pong_matcher(
    pong: bytes | bytearray | memoryview | PongPredicate | PongMatcher | None,
    framing: Framing | None = None,
) -> PongMatcher | None:
    """The matcher a driver uses for its ``pong`` (and ``framing``) arguments, or ``None``.

    * ``None``: no filtering (every inbound byte goes to the application); no framing.
    * a :class:`PongMatcher` (``feed`` and ``flush``): returned as it is; no framing.
    * bytes: a :class:`MessagePongs` for that pong message. Without a framing, a pong ending
      in ``b"\\r\\n"`` means :class:`Lines` ``(b"\\r\\n")``, one ending in ``b"\\n"``
      :class:`Lines` ``()``; any other pong needs an explicit framing (never guessed).
    * a predicate ``(message: bytes) -> bool``: a :class:`MessagePongs`; needs a framing.

    Bad values raise :class:`~keepalive.errors.InvalidSetting` (or
    :class:`~keepalive.errors.InvalidSettingType`) naming ``pong`` or ``framing``.
    """
    if pong is None:
        if framing is not None:
            raise InvalidSetting("framing", framing, "None when pong is None (nothing is filtered)")
        return None
    if isinstance(pong, (bytes, bytearray, memoryview)):
        token = _pong_bytes(pong)
        if framing is None:
            if token.endswith(b"\r\n"):
                framing = Lines(b"\r\n")
            elif token.endswith(b"\n"):
                framing = Lines(b"\n")
            else:
                raise InvalidSetting(
                    "framing",
                    None,
                    f"a framing for pong={token!r}",
                    hint=(
                        "a pong is matched only as a whole message, so say how messages "
                        "are framed: framing=keepalive.framing.FixedSize(...), "
                        "LengthPrefixed(...), Lines(...) or a Framer; or use pong=None "
                        "(any inbound byte is life, nothing is filtered)"
                    ),
                )
        return MessagePongs(token, framing)
    if isinstance(pong, str):
        raise InvalidSettingType("pong", pong, _PONG_ALLOWED, hint=_ENCODE_HINT)
    if isinstance(pong, PongMatcher):
        if framing is not None:
            raise InvalidSetting(
                "framing", framing, "None when pong is a PongMatcher (it does its own framing)"
            )
        return pong
    if callable(pong):
        if framing is None:
            raise InvalidSetting(
                "framing",
                None,
                f"a framing for a predicate pong: {_FRAMING_ALLOWED}",
                hint="the predicate is asked about whole messages",
            )
        return MessagePongs(pong, framing)
    raise InvalidSettingType("pong", pong, _PONG_ALLOWED + ", a PongMatcher or None")


def pong_matcher_factory(
    pong: object,
    framing: object = None,
    pong_matcher: object = None,
) -> Callable[[], PongMatcher | None]:
    """For a supervisor: checks its pong arguments once, and returns what makes a fresh
    matcher for each connection (a matcher keeps per-stream state, so it is never shared).

    ``pong_matcher``: a factory of your own :class:`PongMatcher` (then ``framing`` must be
    ``None``, and ``pong`` is not used); otherwise ``pong`` and ``framing`` as for
    :func:`make_pong_matcher`, where a matcher *instance* is refused (it would be shared).
    """
    if pong_matcher is not None:
        if not callable(pong_matcher):
            raise InvalidSettingType(
                "pong_matcher", pong_matcher, "a callable making a PongMatcher"
            )
        if framing is not None:
            raise InvalidSetting("framing", framing, "None when pong_matcher is given")
        return cast("Callable[[], PongMatcher | None]", pong_matcher)
    if isinstance(pong, PongMatcher):
        raise InvalidSettingType(
            "pong",
            pong,
            _PONG_ALLOWED + " or None",
            hint="a matcher keeps state per stream: pass pong_matcher=<a factory, e.g. its class>",
        )
    make_pong_matcher(pong, framing)  # type: ignore[arg-type]  # raises for bad values
    return lambda: make_pong_matcher(pong, framing)  # type: ignore[arg-type]


PongSource: TypeAlias = bytes | bytearray | memoryview | PongPredicate | PongMatcher | None
"""What a driver's ``pong`` argument may be (see :func:`make_pong_matcher`)."""

_PONG_ALLOWED = "a non-empty bytes pong message or a predicate (message: bytes) -> bool"
_FRAMING_ALLOWED = "Lines(...), FixedSize(...), LengthPrefixed(...) or a Framer"


def _outstanding(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSettingType("outstanding", value, "a whole number >= 0")
    return int(value)


def _pong_bytes(value: bytes | bytearray | memoryview) -> bytes:
    token = bytes(value)
    if not token:
        raise InvalidSetting("pong", value, "a non-empty bytes pong message")
    return token


def _check_whole_message(token: bytes, framing: Framing) -> None:
    """A bytes pong must be exactly one message, or it could never match (or match wrongly)."""
    if isinstance(framing, Lines):
        delimiter = framing.delimiter
        if not token.endswith(delimiter) or token.find(delimiter) != len(token) - len(delimiter):
            raise InvalidSetting(
                "pong",
                token,
                f"exactly one message under {framing!r}: ending with {delimiter!r} and "
                f"containing no earlier {delimiter!r}",
            )
        return
    if isinstance(framing, FixedSize):
        if len(token) != framing.size:
            raise InvalidSetting(
                "pong", token, f"exactly one message under {framing!r}: {framing.size} bytes"
            )
        return
    try:
        length = framing.message_length(token)
    except FramingError as exc:
        raise InvalidSetting(
            "pong", token, f"exactly one message under {framing!r}", hint=str(exc)
        ) from exc
    if length != len(token):
        raise InvalidSetting(
            "pong",
            token,
            f"exactly one message under {framing!r}",
            hint=f"its message_length() is {length!r}, not {len(token)}",
        )


def _joined(data: bytes, pieces: list[bytes], run: int, limit: int) -> bytes:
    """``pieces`` followed by ``data[run:limit]``, without a copy when that is all of data."""
    if not pieces:
        if run == 0 and limit == len(data):
            return data
        return data[run:limit]
    if run < limit:
        pieces.append(data[run:limit])
    return b"".join(pieces)
