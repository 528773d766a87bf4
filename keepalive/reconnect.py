"""Reconnect backoff policies: pure, seeded delay sequences and a retryable-error predicate.

Nothing here does I/O: no sleeping, no clock reads, no sockets, no asyncio import. A policy
is a frozen, hashable, picklable value; ``policy.delays(rng)`` is a generator of plain floats.
Drivers (sync or async, in other modules) do the connecting and the sleeping, and pass the
time in where a decision needs it.

Numbering. Attempt 0 is the first connect and runs at once; it is *not* preceded by a delay.
``delays()`` yields the pause before retry 1 (attempt 1), retry 2, ... and each pause is
meant to start when the previous attempt has failed::

    attempt 0 ─ fails ─ sleep d1 ─ attempt 1 ─ fails ─ sleep d2 ─ attempt 2 ...

(gRPC measures its backoff from the *start* of the failed attempt; measuring from its
failure is never more aggressive and needs no bookkeeping of attempt start times.)

Defaults follow gRPC's ``doc/connection-backoff.md``: initial 1 s, multiplier 1.6, jitter
±20 %, cap 120 s, connect timeout 20 s. Jitter modes from the AWS Architecture Blog
"Exponential Backoff and Jitter" are built in (``"full"``, ``"equal"``, ``"decorrelated"``),
and any object with a matching ``apply`` method can be plugged in (:class:`Jitter`).

Stopping. ``max_attempts`` counts *all* attempts, the first included, so the sequence holds
at most ``max_attempts - 1`` delays (``max_attempts=1``: never retry). ``max_elapsed`` bounds
the sum of the delays: the generator stops instead of yielding a delay that would take the
sum past it. The pure sequence knows nothing of the time spent connecting; drivers also
check the real clock against ``policy.deadline(start)``, the last instant at which a retry
may *start* (an attempt that starts in time gets its full ``connect_timeout``, so a driver
gives up at the latest ``max_elapsed + connect_timeout`` after it started).

The intended driver loop, with :class:`RetryState` doing the bookkeeping (``clock`` is
``time.monotonic``; an asyncio driver awaits ``asyncio.sleep`` instead)::

    state = RetryState(policy, start=clock(), rng=rng)
    while True:
        try:
            return connect(timeout=policy.connect_timeout)
        except Exception as exc:  # KeyboardInterrupt, CancelledError: never retried
            delay = state.next_delay(exc, now=clock())
            if delay is None:  # state.stop_reason says why
                raise
            sleep(delay)

A supervised connection makes a fresh ``RetryState`` for each outage, so the backoff starts
again from ``initial`` after a connection succeeded.
"""

from __future__ import annotations

import enum
import errno
import math
import random
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from numbers import Real
from typing import Protocol, TypeAlias, runtime_checkable

from keepalive._validate import positive_int, positive_seconds
from keepalive.errors import InvalidSetting, InvalidSettingType

__all__ = [
    "Backoff",
    "DecorrelatedJitter",
    "EqualJitter",
    "FullJitter",
    "Jitter",
    "NoJitter",
    "ProportionalJitter",
    "RetryOn",
    "RetryPolicy",
    "RetryState",
    "StopReason",
    "is_retryable_default",
]

RetryOn: TypeAlias = tuple[type[BaseException], ...] | Callable[[BaseException], bool]
"""Which errors a policy retries: exactly these exception types, or a predicate."""


# ---------------------------------------------------------------------------------------------
# Small validators (numbers that are not seconds)
# ---------------------------------------------------------------------------------------------


def _finite_real(field: str, value: object, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidSettingType(field, value, allowed)
    try:
        number = float(value)
    except (OverflowError, ValueError) as exc:  # an int or Fraction beyond float range
        raise InvalidSetting(field, value, allowed) from exc
    if not math.isfinite(number):
        raise InvalidSetting(field, value, allowed)
    return number


def _factor(field: str, value: object) -> float:
    """A growth factor: finite, >= 1 (below 1 the delays would shrink towards 0)."""
    allowed = "a finite number >= 1"
    number = _finite_real(field, value, allowed)
    if number < 1:
        raise InvalidSetting(field, value, allowed)
    return number


def _fraction(field: str, value: object) -> float:
    """A jitter fraction in [0, 1): at 1 the delay could drop to 0."""
    allowed = "a fraction in [0, 1)"
    number = _finite_real(field, value, allowed)
    if not 0 <= number < 1:
        raise InvalidSetting(field, value, allowed)
    return number


def _require_hashable(field: str, value: object) -> None:
    try:
        hash(value)
    except TypeError:
        raise InvalidSettingType(
            field, value, "a hashable object (a policy is a hashable value)"
        ) from None


# ---------------------------------------------------------------------------------------------
# Which errors are worth a retry
# ---------------------------------------------------------------------------------------------

# Network conditions that can clear up by themselves. Left out on purpose: EADDRNOTAVAIL
# (mostly a local misconfiguration: a source address this host lacks; on Linux also ephemeral
# port exhaustion, which retrying adds to), EACCES/EPERM (a firewall rule or policy), and
# anything about the socket itself (EBADF, EINVAL, ...). The WSA names are Windows' own codes.
_TRANSIENT_ERRNO_NAMES = (
    "ENETUNREACH",
    "EHOSTUNREACH",
    "ENETDOWN",
    "EHOSTDOWN",
    "ENETRESET",
    "ETIMEDOUT",
    "ECONNREFUSED",
    "ECONNRESET",
    "ECONNABORTED",
    "EAGAIN",
    "WSAENETUNREACH",
    "WSAEHOSTUNREACH",
    "WSAENETDOWN",
    "WSAEHOSTDOWN",
    "WSAENETRESET",
    "WSAETIMEDOUT",
    "WSAECONNREFUSED",
    "WSAECONNRESET",
    "WSAECONNABORTED",
)
_TRANSIENT_ERRNOS: frozenset[int] = frozenset(
    code for name in _TRANSIENT_ERRNO_NAMES if (code := getattr(errno, name, None)) is not None
)


def is_retryable_default(exc: BaseException) -> bool:
    """True for errors that a later connection attempt may well not meet again.

    Retried: ``ConnectionError`` and its subclasses (refused, reset, aborted, broken pipe,
    :class:`~keepalive.errors.PeerUnresponsive`), ``TimeoutError`` (``socket.timeout``), an
    ``OSError`` whose errno says the network is unreachable, down, timed out, reset or
    temporarily out of resources (``ENETUNREACH``, ``EHOSTUNREACH``, ``ENETDOWN``,
    ``EHOSTDOWN``, ``ENETRESET``, ``ETIMEDOUT``, ``ECONNREFUSED``, ``ECONNRESET``,
    ``ECONNABORTED``, ``EAGAIN``), and a ``socket.gaierror`` with ``EAI_AGAIN`` (the resolver
    failed for now).

    Not retried: TLS errors (``ssl.SSLError``, certificate failures: retrying will not fix a
    certificate), any other ``gaierror`` (the name does not exist), ``PermissionError``,
    ``EADDRNOTAVAIL``, programming errors (``ValueError``, ``TypeError``, ...) and anything
    that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``, task cancellation).
    """
    if not isinstance(exc, Exception):
        return False
    # ssl.SSLError is an OSError whose errno holds OpenSSL codes, so it must be ruled out
    # before the errno test. An SSLError can only exist once ssl was imported; looking in
    # sys.modules first keeps this predicate from importing ssl itself.
    if "ssl" in sys.modules:
        import ssl  # noqa: PLC0415  # lazy: keep `import keepalive` free of ssl

        if isinstance(exc, ssl.SSLError):
            return False
    # gaierror's errno is an EAI_* code, not an errno: never compare it with the errno set.
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    if sys.version_info < (3, 11):  # pragma: no cover - the two became TimeoutError in 3.11
        for module_name in ("asyncio.exceptions", "concurrent.futures._base"):
            module = sys.modules.get(module_name)
            if module is not None and isinstance(exc, module.TimeoutError):
                return True
    return False


def _as_retry_on(value: object) -> RetryOn:
    allowed = "an exception type, a tuple of exception types, or a predicate(exc) -> bool"
    if isinstance(value, type):
        if issubclass(value, BaseException):
            return (value,)
        raise InvalidSettingType("retry_on", value, allowed)
    if isinstance(value, tuple):
        for item in value:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise InvalidSettingType("retry_on", value, allowed)
        return value
    if callable(value):
        _require_hashable("retry_on", value)
        return value
    raise InvalidSettingType("retry_on", value, allowed)


def _describe_retry_on(retry_on: RetryOn) -> str:
    if isinstance(retry_on, tuple):
        names = ", ".join(kind.__qualname__ for kind in retry_on)
        return f"({names},)" if len(retry_on) == 1 else f"({names})"
    return getattr(retry_on, "__qualname__", repr(retry_on))


# ---------------------------------------------------------------------------------------------
# Jitter
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class Jitter(Protocol):
    """Turns the nominal delay of one retry into the delay actually used.

    ``nominal`` is ``min(max_delay, initial * multiplier ** n)`` for retry ``n + 1``;
    ``previous`` is the delay this sequence yielded last (``None`` before the first retry);
    ``policy`` gives access to ``initial`` and ``max_delay``; ``rng`` is the only source of
    randomness allowed (so a seeded ``random.Random`` reproduces the sequence). The policy
    clamps the result into ``[0, max_delay]``. Implementations should be frozen dataclasses
    (a :class:`Backoff` holding them must stay hashable).
    """

    def apply(
        self, nominal: float, previous: float | None, policy: Backoff, rng: random.Random
    ) -> float:
        """The delay for this retry, in seconds."""
        ...


@dataclass(frozen=True, slots=True)
class NoJitter:
    """The nominal delay unchanged: deterministic, and synchronised across clients."""

    def apply(
        self, nominal: float, previous: float | None, policy: Backoff, rng: random.Random
    ) -> float:
        """``nominal``."""
        return nominal


@dataclass(frozen=True, slots=True)
class ProportionalJitter:
    """gRPC's jitter: uniform in ``nominal * (1 ± fraction)``, cut off at ``max_delay``.

    gRPC lets a delay exceed ``MAX_BACKOFF`` by up to the jitter fraction; here ``max_delay``
    is a hard ceiling. The window is truncated at the ceiling rather than the draw clamped to
    it, because clamping would put half of the clients on exactly ``max_delay`` and so
    re-synchronise them (at the cap the delays are uniform in ``[0.8, 1.0] * max_delay`` by
    default, mean ``0.9 * max_delay``).
    """

    fraction: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "fraction", _fraction("ProportionalJitter.fraction", self.fraction)
        )

    def apply(
        self, nominal: float, previous: float | None, policy: Backoff, rng: random.Random
    ) -> float:
        """Uniform in ``[nominal * (1 - f), min(nominal * (1 + f), max_delay)]``."""
        if self.fraction == 0:
            return nominal
        low = nominal * (1 - self.fraction)
        high = min(nominal * (1 + self.fraction), policy.max_delay)
        return rng.uniform(low, high)


@dataclass(frozen=True, slots=True)
class FullJitter:
    """AWS "full jitter": uniform in ``[0, nominal]`` (mean ``nominal / 2``)."""

    def apply(
        self, nominal: float, previous: float | None, policy: Backoff, rng: random.Random
    ) -> float:
        """Uniform in ``[0, nominal]``."""
        return rng.uniform(0.0, nominal)


@dataclass(frozen=True, slots=True)
class EqualJitter:
    """AWS "equal jitter": ``nominal / 2`` plus uniform in ``[0, nominal / 2]`` (mean 3/4)."""

    def apply(
        self, nominal: float, previous: float | None, policy: Backoff, rng: random.Random
    ) -> float:
        """``nominal / 2 + U(0, nominal / 2)``."""
        half = nominal / 2
        return half + rng.uniform(0.0, half)


@dataclass(frozen=True, slots=True)
class DecorrelatedJitter:
    """AWS "decorrelated jitter": ``min(max_delay, U(initial, previous * growth))``.

    The first delay uses ``previous = initial``. Each delay depends on the one before, not
    on the retry number, so ``multiplier`` plays no part; ``growth`` is the AWS article's 3.
    """

    growth: float = 3.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "growth", _factor("DecorrelatedJitter.growth", self.growth))

    def apply(
        self, nominal: float, previous: float | None, policy: Backoff, rng: random.Random
    ) -> float:
        """``min(max_delay, U(initial, previous * growth))``."""
        last = policy.initial if previous is None else previous
        return min(policy.max_delay, rng.uniform(policy.initial, last * self.growth))


_JITTER_BY_NAME: dict[str, Jitter] = {
    "none": NoJitter(),
    "proportional": ProportionalJitter(0.2),
    "full": FullJitter(),
    "equal": EqualJitter(),
    "decorrelated": DecorrelatedJitter(),
}
_JITTER_ALLOWED = (
    "a fraction in [0, 1), one of "
    + ", ".join(repr(name) for name in _JITTER_BY_NAME)
    + ", or a Jitter instance"
)


def _as_jitter(value: object) -> Jitter:
    if isinstance(value, str):
        jitter = _JITTER_BY_NAME.get(value)
        if jitter is None:
            raise InvalidSetting("jitter", value, _JITTER_ALLOWED)
        return jitter
    if isinstance(value, Real) and not isinstance(value, bool):
        fraction = _fraction("jitter", value)
        return NoJitter() if fraction == 0 else ProportionalJitter(fraction)
    if isinstance(value, type):
        raise InvalidSettingType(
            "jitter", value, _JITTER_ALLOWED, hint=f"pass an instance: {value.__name__}()"
        )
    if isinstance(value, Jitter) and callable(value.apply):
        _require_hashable("jitter", value)
        return value
    raise InvalidSettingType("jitter", value, _JITTER_ALLOWED)


# ---------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class RetryPolicy(Protocol):
    """What a connect driver needs from a policy; :class:`Backoff` is the built-in one.

    ``delays(rng)`` yields the pause before each retry and ends when retrying should stop;
    ``deadline(start)`` is the last instant (same clock as ``start``) at which a retry may
    start, or ``None``; ``connect_timeout`` bounds each attempt; ``is_retryable(exc)`` says
    whether an attempt's error is worth another attempt.
    """

    @property
    def connect_timeout(self) -> float:
        """Seconds one connection attempt may take."""
        ...

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The delays before retry 1, 2, ...; finite or not."""
        ...

    def deadline(self, start: float) -> float | None:
        """The last instant at which a retry may start, given when the first attempt did."""
        ...

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether an attempt that failed with ``exc`` should be followed by another."""
        ...


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Backoff:
    """Capped exponential backoff with jitter, stop conditions and a retryable-error test.

    The nominal delay before retry ``n`` (1-based) is ``min(max_delay, initial *
    multiplier ** (n - 1))``; ``jitter`` turns it into the delay used, always within
    ``[0, max_delay]``. All arguments are keyword-only:

    * ``initial`` (s, > 0), ``multiplier`` (>= 1), ``max_delay`` (s, >= initial);
    * ``jitter``: a fraction in [0, 1) (gRPC's ±x; 0 means none), a name (``"none"``,
      ``"proportional"`` = ±0.2, ``"full"``, ``"equal"``, ``"decorrelated"``) or a
      :class:`Jitter` instance; stored as a :class:`Jitter`, so ``jitter=0.2``,
      ``"proportional"`` and ``ProportionalJitter(0.2)`` make equal policies;
    * ``max_attempts``: all attempts counted, the first included (``None``: no limit);
    * ``max_elapsed`` (s): bound on the sum of the delays, and via :meth:`deadline` on the
      real time after which drivers start no retry (``None``: no limit);
    * ``connect_timeout`` (s): how long one attempt may take (gRPC's MIN_CONNECT_TIMEOUT);
    * ``retry_on``: an exception type, a tuple of them, or a predicate; defaults to
      :func:`is_retryable_default`. Whatever it says, errors that are not ``Exception``
      (``KeyboardInterrupt``, ``SystemExit``, cancellation) are never retried.

    ``initial=0`` is refused: an exponential schedule from 0 stays at 0, a hidden busy loop.
    The one exception is the explicit zero schedule of ``Backoff.constant(0, ...)``
    (``initial = max_delay = 0``), which must come with ``max_attempts`` for the same reason.
    """

    initial: float
    multiplier: float
    max_delay: float
    jitter: Jitter
    max_attempts: int | None
    max_elapsed: float | None
    connect_timeout: float
    retry_on: RetryOn

    def __init__(
        self,
        *,
        initial: float = 1.0,
        multiplier: float = 1.6,
        max_delay: float = 120.0,
        jitter: float | str | Jitter = 0.2,
        max_attempts: int | None = None,
        max_elapsed: float | None = None,
        connect_timeout: float = 20.0,
        retry_on: RetryOn | type[BaseException] = is_retryable_default,
    ) -> None:
        initial_s = positive_seconds("initial", initial, allow_zero=True)
        multiplier_f = _factor("multiplier", multiplier)
        max_delay_s = positive_seconds("max_delay", max_delay, allow_zero=True)
        if max_delay_s < initial_s:
            raise InvalidSetting("max_delay", max_delay, f"seconds >= initial ({initial_s!r})")
        if initial_s == 0 and max_delay_s != 0:
            raise InvalidSetting(
                "initial",
                initial,
                "a finite number of seconds > 0",
                hint="0 only in the zero-delay schedule Backoff.constant(0, max_attempts=...)",
            )
        attempts = None if max_attempts is None else positive_int("max_attempts", max_attempts)
        if max_delay_s == 0 and attempts is None:
            raise InvalidSetting(
                "max_attempts",
                max_attempts,
                "a whole number >= 1 when every delay is 0",
                hint="an unbounded zero-delay retry loop spins",
            )
        elapsed = None if max_elapsed is None else positive_seconds("max_elapsed", max_elapsed)
        object.__setattr__(self, "initial", initial_s)
        object.__setattr__(self, "multiplier", multiplier_f)
        object.__setattr__(self, "max_delay", max_delay_s)
        object.__setattr__(self, "jitter", _as_jitter(jitter))
        object.__setattr__(self, "max_attempts", attempts)
        object.__setattr__(self, "max_elapsed", elapsed)
        object.__setattr__(
            self, "connect_timeout", positive_seconds("connect_timeout", connect_timeout)
        )
        object.__setattr__(self, "retry_on", _as_retry_on(retry_on))

    @classmethod
    def constant(
        cls,
        delay: float,
        *,
        jitter: float | str | Jitter = "none",
        max_attempts: int | None = None,
        max_elapsed: float | None = None,
        connect_timeout: float = 20.0,
        retry_on: RetryOn | type[BaseException] = is_retryable_default,
    ) -> Backoff:
        """The same ``delay`` before every retry (no jitter unless asked for).

        A constant schedule is a :class:`Backoff` with ``multiplier=1`` and ``initial =
        max_delay = delay``, not a class of its own: one value type, one validated code path,
        and the :class:`Jitter` protocol's ``policy`` argument is always a ``Backoff``.
        ``delay=0`` (retry at once, e.g. in tests) requires ``max_attempts``.
        """
        seconds = positive_seconds("delay", delay, allow_zero=True)
        return cls(
            initial=seconds,
            multiplier=1.0,
            max_delay=seconds,
            jitter=jitter,
            max_attempts=max_attempts,
            max_elapsed=max_elapsed,
            connect_timeout=connect_timeout,
            retry_on=retry_on,
        )

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The delay before retry 1, 2, ... (attempt 0 runs at once and has none).

        At most ``max_attempts - 1`` delays; stops, instead of yielding it, at the first delay
        that would take the sum past ``max_elapsed``. Endless when neither is set. A seeded
        ``rng`` reproduces the sequence; ``None`` uses a fresh ``random.Random()``. Each call
        returns an independent generator; the policy itself holds no state.
        """
        if rng is not None and not isinstance(rng, random.Random):
            raise InvalidSettingType("rng", rng, "a random.Random instance or None")
        return self._generate(random.Random() if rng is None else rng)

    def _generate(self, rng: random.Random) -> Iterator[float]:
        retries_left = None if self.max_attempts is None else self.max_attempts - 1
        total = 0.0
        previous: float | None = None
        nominal = self.initial
        while retries_left is None or retries_left > 0:
            delay = self._bounded(self.jitter.apply(nominal, previous, self, rng))
            if self.max_elapsed is not None and total + delay > self.max_elapsed:
                return
            total += delay
            previous = delay
            if retries_left is not None:
                retries_left -= 1
            yield delay
            # Multiplying step by step (not initial * multiplier ** n) cannot overflow.
            nominal = min(nominal * self.multiplier, self.max_delay)

    def _bounded(self, delay: object) -> float:
        """A jitter's result as a delay in [0, max_delay]; a non-number is a bug in it."""
        allowed = "a Jitter whose apply() returns a number of seconds"
        if isinstance(delay, bool) or not isinstance(delay, Real):
            raise InvalidSettingType("jitter", self.jitter, allowed, hint=f"got {delay!r}")
        try:
            value = float(delay)
        except (OverflowError, ValueError):  # an int beyond float range: longer than any cap
            value = 0.0 if delay < 0 else math.inf
        if math.isnan(value):
            raise InvalidSetting("jitter", self.jitter, allowed, hint="got nan")
        return min(max(value, 0.0), self.max_delay)

    def deadline(self, start: float) -> float | None:
        """``start + max_elapsed``: no retry starts later (``None`` without ``max_elapsed``)."""
        return None if self.max_elapsed is None else start + self.max_elapsed

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` deserves another attempt, per ``retry_on`` (never for non-Exceptions)."""
        if not isinstance(exc, Exception):
            return False
        if isinstance(self.retry_on, tuple):
            return isinstance(exc, self.retry_on)
        return bool(self.retry_on(exc))

    def __repr__(self) -> str:
        if self.multiplier == 1 and self.initial == self.max_delay:
            parts = [repr(self.initial), f"jitter={self.jitter!r}"]
            head = "Backoff.constant("
        else:
            parts = [
                f"initial={self.initial!r}",
                f"multiplier={self.multiplier!r}",
                f"max_delay={self.max_delay!r}",
                f"jitter={self.jitter!r}",
            ]
            head = "Backoff("
        if self.max_attempts is not None:
            parts.append(f"max_attempts={self.max_attempts!r}")
        if self.max_elapsed is not None:
            parts.append(f"max_elapsed={self.max_elapsed!r}")
        parts.append(f"connect_timeout={self.connect_timeout!r}")
        if self.retry_on is not is_retryable_default:
            parts.append(f"retry_on={_describe_retry_on(self.retry_on)}")
        return head + ", ".join(parts) + ")"


# ---------------------------------------------------------------------------------------------
# Driver bookkeeping
# ---------------------------------------------------------------------------------------------


class StopReason(enum.Enum):
    """Why :meth:`RetryState.next_delay` said to stop retrying."""

    NOT_RETRYABLE = "the error is not retryable"
    EXHAUSTED = "the policy allows no more retries"  # max_attempts, or max_elapsed in delays
    DEADLINE = "the next retry would start after the deadline"  # real clock vs max_elapsed


class RetryState:
    """One outage's retry bookkeeping for a driver: pure, the driver passes ``now`` in.

    ``retries`` counts the retries granted so far (the attempt about to run is number
    ``retries``, 0-based); ``total_delay`` sums their delays; ``stop_reason`` is set once
    :meth:`next_delay` has returned ``None`` and stays set. See the module docstring for
    the loop this serves.
    """

    __slots__ = ("_delays", "deadline", "policy", "retries", "start", "stop_reason", "total_delay")

    def __init__(
        self, policy: RetryPolicy, *, start: float, rng: random.Random | None = None
    ) -> None:
        self.policy = policy
        self.start = start
        self.deadline = policy.deadline(start)
        self.retries = 0
        self.total_delay = 0.0
        self.stop_reason: StopReason | None = None
        self._delays = policy.delays(rng)

    def next_delay(self, exc: BaseException, *, now: float) -> float | None:
        """After an attempt failed with ``exc`` at ``now``: seconds to wait, or ``None`` to stop.

        Stops when ``exc`` is not retryable, when the policy's delays are used up, or when
        the retry would start after the deadline (``now + delay > start + max_elapsed``).
        """
        if self.stop_reason is not None:
            return None
        if not self.policy.is_retryable(exc):
            self.stop_reason = StopReason.NOT_RETRYABLE
            return None
        delay = next(self._delays, None)
        if delay is None:
            self.stop_reason = StopReason.EXHAUSTED
            return None
        if not (math.isfinite(delay) and delay >= 0):  # a custom policy's bug: fail loudly
            raise InvalidSetting("delays", delay, "finite seconds >= 0 from policy.delays()")
        if self.deadline is not None and now + delay > self.deadline:
            self.stop_reason = StopReason.DEADLINE
            return None
        self.retries += 1
        self.total_delay += delay
        return delay

    def __repr__(self) -> str:
        reason = "" if self.stop_reason is None else f", stop_reason={self.stop_reason.name}"
        return (
            f"RetryState(retries={self.retries}, total_delay={self.total_delay!r}, "
            f"deadline={self.deadline!r}{reason}, policy={self.policy!r})"
        )
