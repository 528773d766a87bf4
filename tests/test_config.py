"""`KeepaliveConfig`: validation, value semantics, derived values and goal constructors.

Pure: no sockets. Linux's rules (whole-second idle/interval, millisecond user timeout that
replaces the probe count) are checked through ``keepalive.platforms.linux.detect()``, so these
tests run on any OS.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
import sys
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from keepalive import InvalidSetting, InvalidSettingType, KeepaliveConfig, KeepaliveError
from keepalive.platforms import Platform
from keepalive.platforms import linux as linux_platform

SECONDS_FIELDS = ("idle", "interval", "user_timeout")
ALL_FIELDS = (*SECONDS_FIELDS, "count")


@pytest.fixture(scope="module")
def linux() -> Platform:
    return linux_platform.detect()


def build(field: str, value: object) -> KeepaliveConfig:
    """A config with ``field`` set to ``value`` and every other field valid."""
    return KeepaliveConfig(**{field: value})  # type: ignore[arg-type]


def assert_names_field_value_and_range(exc: InvalidSetting, field: str, value: object) -> None:
    message = str(exc)
    assert exc.field == field
    assert exc.value is value or exc.value == value
    assert message.startswith(f"{field}={value!r} ")
    assert exc.allowed in message
    assert any(bound in exc.allowed for bound in ("> 0", ">= 0", "from 1 to")), exc.allowed


def case_id(value: object) -> str:
    """A test id that is the same in every process (no memory addresses: pytest-xdist)."""
    text = repr(value)
    return type(value).__name__ if " at 0x" in text else text


# -- validation -----------------------------------------------------------------------------------

WRONG_TYPES_FOR_SECONDS: list[object] = [
    True,
    False,
    "60",
    b"60",
    [60],
    (60,),
    {"seconds": 60},
    object(),
    complex(60, 0),
    Decimal("60"),  # not a numbers.Real: refused rather than silently converted
]
BAD_VALUES_FOR_SECONDS: list[object] = [
    0,
    0.0,
    -0.0,
    -1,
    -0.5,
    -(10**30),
    math.nan,
    math.inf,
    -math.inf,
    Fraction(0),
    Fraction(-1, 3),
]


@pytest.mark.parametrize("field", SECONDS_FIELDS)
@pytest.mark.parametrize("value", WRONG_TYPES_FOR_SECONDS, ids=case_id)
def test_seconds_fields_refuse_wrong_types(field: str, value: object) -> None:
    with pytest.raises(InvalidSettingType) as caught:
        build(field, value)
    assert isinstance(caught.value, KeepaliveError)
    assert isinstance(caught.value, TypeError)
    assert isinstance(caught.value, ValueError)  # InvalidSetting is a ValueError too
    assert_names_field_value_and_range(caught.value, field, value)


@pytest.mark.parametrize("field", SECONDS_FIELDS)
@pytest.mark.parametrize("value", BAD_VALUES_FOR_SECONDS, ids=case_id)
def test_seconds_fields_refuse_out_of_range_values(field: str, value: object) -> None:
    with pytest.raises(InvalidSetting) as caught:
        build(field, value)
    assert isinstance(caught.value, KeepaliveError)
    assert isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, TypeError), "a number of the right type is a ValueError"
    assert_names_field_value_and_range(caught.value, field, value)


@pytest.mark.parametrize("field", SECONDS_FIELDS)
@pytest.mark.parametrize("value", [10**400, Fraction(10**400, 3)], ids=["10**400", "Fraction"])
def test_seconds_fields_refuse_numbers_beyond_float_range(field: str, value: object) -> None:
    with pytest.raises(InvalidSetting) as caught:
        build(field, value)
    assert caught.value.field == field


def test_user_timeout_none_means_system_default() -> None:
    assert KeepaliveConfig(user_timeout=None).user_timeout is None
    assert KeepaliveConfig().user_timeout is None


@pytest.mark.parametrize("field", ["idle", "interval"])
def test_idle_and_interval_refuse_none(field: str) -> None:
    with pytest.raises(InvalidSettingType) as caught:
        build(field, None)
    assert_names_field_value_and_range(caught.value, field, None)


@pytest.mark.parametrize(
    "value",
    [True, False, 5.0, 5.5, math.nan, math.inf, "5", b"5", None, [5], object(), Decimal(5)],
    ids=case_id,
)
def test_count_refuses_wrong_types(value: object) -> None:
    with pytest.raises(InvalidSettingType) as caught:
        build("count", value)
    assert isinstance(caught.value, KeepaliveError)
    assert isinstance(caught.value, TypeError)
    assert_names_field_value_and_range(caught.value, "count", value)


@pytest.mark.parametrize("value", [0, -1, -(10**30)], ids=case_id)
def test_count_refuses_values_below_one(value: int) -> None:
    with pytest.raises(InvalidSetting) as caught:
        build("count", value)
    assert isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, TypeError)
    assert_names_field_value_and_range(caught.value, "count", value)
    assert "from 1 to 2147483647" in str(caught.value)


def test_positional_arguments_are_validated_too() -> None:
    with pytest.raises(InvalidSetting) as caught:
        KeepaliveConfig(60, 0, 5)
    assert caught.value.field == "interval"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1.0), (0.25, 0.25), (Fraction(1, 4), 0.25), (10**6, 1e6), (1e-9, 1e-9)],
    ids=case_id,
)
def test_seconds_accept_any_finite_positive_real(value: object, expected: float) -> None:
    cfg = KeepaliveConfig(idle=value, interval=value, user_timeout=value)  # type: ignore[arg-type]
    for field in SECONDS_FIELDS:
        stored = getattr(cfg, field)
        assert type(stored) is float
        assert stored == expected


@given(
    idle=st.floats(min_value=0, exclude_min=True, allow_infinity=False),
    interval=st.integers(min_value=1, max_value=10**12),
    count=st.integers(min_value=1, max_value=2**31 - 1),
)
def test_every_positive_finite_value_is_accepted(idle: float, interval: int, count: int) -> None:
    cfg = KeepaliveConfig(idle=idle, interval=interval, count=count)
    assert (cfg.idle, cfg.interval, cfg.count) == (idle, float(interval), count)


# -- value semantics ------------------------------------------------------------------------------


def test_int_and_float_seconds_compare_and_hash_equal() -> None:
    as_int = KeepaliveConfig(idle=60, interval=10, count=5, user_timeout=110)
    as_float = KeepaliveConfig(idle=60.0, interval=10.0, count=5, user_timeout=110.0)
    assert as_int == as_float
    assert hash(as_int) == hash(as_float)
    assert len({as_int, as_float}) == 1
    assert {as_int: "x"}[as_float] == "x"
    assert as_int != KeepaliveConfig(idle=61, interval=10, count=5, user_timeout=110)
    assert as_int != KeepaliveConfig(idle=60, interval=10, count=5)


@given(
    idle=st.integers(1, 10**6),
    interval=st.integers(1, 10**6),
    count=st.integers(1, 1000),
    user_timeout=st.none() | st.integers(1, 10**6),
)
def test_int_and_float_forms_are_interchangeable(
    idle: int, interval: int, count: int, user_timeout: int | None
) -> None:
    as_int = KeepaliveConfig(idle, interval, count, user_timeout)
    as_float = KeepaliveConfig(
        float(idle), float(interval), count, None if user_timeout is None else float(user_timeout)
    )
    assert as_int == as_float
    assert hash(as_int) == hash(as_float)


def test_config_is_frozen() -> None:
    cfg = KeepaliveConfig()
    for field in ALL_FIELDS:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, field, 1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(cfg, field)
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        cfg.extra = 1  # type: ignore[attr-defined]
    assert cfg == KeepaliveConfig()


def test_replace_validates() -> None:
    with pytest.raises(InvalidSetting) as caught:
        dataclasses.replace(KeepaliveConfig(), interval=-1)
    assert caught.value.field == "interval"
    with pytest.raises(InvalidSetting, match="count"):
        KeepaliveConfig().__replace__(count=0)  # copy.replace() from Python 3.13


def test_config_is_a_dataclass_for_introspection() -> None:
    """Written without @dataclass (keeping `dataclasses` off the first-use path), the config
    still answers every dataclasses function as the frozen dataclass it was."""
    cfg = KeepaliveConfig(idle=30, interval=5, count=4, user_timeout=50)
    assert dataclasses.is_dataclass(cfg)
    assert dataclasses.is_dataclass(KeepaliveConfig)
    fields = dataclasses.fields(KeepaliveConfig)
    assert [field.name for field in fields] == ["idle", "interval", "count", "user_timeout"]
    assert [field.default for field in fields] == [60.0, 10.0, 5, None]
    assert dataclasses.asdict(cfg) == {
        "idle": 30.0,
        "interval": 5.0,
        "count": 4,
        "user_timeout": 50.0,
    }
    assert dataclasses.astuple(cfg) == (30.0, 5.0, 4, 50.0)
    assert KeepaliveConfig.__dataclass_params__.frozen
    changed = dataclasses.replace(cfg, idle=45)
    assert changed == KeepaliveConfig(45, 5, 4, 50)
    assert type(changed) is KeepaliveConfig


def test_config_value_semantics() -> None:
    cfg = KeepaliveConfig(idle=30, interval=5, count=4)
    assert repr(cfg) == "KeepaliveConfig(idle=30.0, interval=5.0, count=4, user_timeout=None)"
    assert cfg != KeepaliveConfig(idle=30, interval=5, count=3)
    assert cfg != (30.0, 5.0, 4, None)
    assert len({cfg, KeepaliveConfig(30.0, 5.0, 4), KeepaliveConfig()}) == 2
    match cfg:
        case KeepaliveConfig(idle, interval, count, user_timeout):
            assert (idle, interval, count, user_timeout) == (30.0, 5.0, 4, None)
        case _:  # pragma: no cover
            pytest.fail("positional match failed")
    for copied in (
        copy.copy(cfg),
        copy.deepcopy(cfg),
        pickle.loads(pickle.dumps(cfg)),
        pickle.loads(pickle.dumps(cfg, protocol=0)),
    ):
        assert copied == cfg
        assert hash(copied) == hash(cfg)
        with pytest.raises(dataclasses.FrozenInstanceError):
            copied.idle = 1  # type: ignore[misc]


def test_defaults_detect_within_110_seconds(linux: Platform) -> None:
    cfg = KeepaliveConfig()
    assert (cfg.idle, cfg.interval, cfg.count, cfg.user_timeout) == (60.0, 10.0, 5, None)
    assert cfg.detection_bound_on(linux) == 110.0


# -- user timeout ---------------------------------------------------------------------------------


@given(
    idle=st.floats(min_value=0.001, max_value=1e6),
    interval=st.floats(min_value=0.001, max_value=1e6),
    count=st.integers(1, 1000),
)
def test_recommended_user_timeout_is_the_keepalive_probing_time(
    idle: float, interval: float, count: int
) -> None:
    cfg = KeepaliveConfig(idle=idle, interval=interval, count=count)
    assert cfg.recommended_user_timeout == idle + interval * count
    with_timeout = cfg.with_user_timeout()
    assert with_timeout.user_timeout == idle + interval * count
    assert (with_timeout.idle, with_timeout.interval, with_timeout.count) == (idle, interval, count)
    assert cfg.user_timeout is None, "with_user_timeout returns a copy"


def test_with_user_timeout_takes_an_explicit_value_and_validates_it() -> None:
    cfg = KeepaliveConfig(idle=60, interval=10, count=5)
    assert cfg.recommended_user_timeout == 110
    assert cfg.with_user_timeout(30).user_timeout == 30.0
    with pytest.raises(InvalidSetting) as caught:
        cfg.with_user_timeout(0)
    assert caught.value.field == "user_timeout"
    with pytest.raises(InvalidSettingType):
        cfg.with_user_timeout("30")  # type: ignore[arg-type]


# -- detection bound on Linux ---------------------------------------------------------------------


def linux_detection_oracle(cfg: KeepaliveConfig) -> float:
    """Linux's tcp_keepalive_timer() simulated in whole milliseconds on the stored values.

    The first probe goes out ``idle`` after the last inbound segment, then one per
    ``interval``. At each tick: with a user timeout, the connection dies once at least one
    probe is out and the silence has lasted ``user_timeout``; without one, once ``count``
    probes are out.
    """
    idle_ms = 1000 * math.ceil(Fraction(repr(cfg.idle)))
    interval_ms = 1000 * math.ceil(Fraction(repr(cfg.interval)))
    timeout_ms = (
        0
        if cfg.user_timeout is None
        else max(1, math.ceil(Fraction(repr(cfg.user_timeout)) * 1000))
    )
    now, probes_out = idle_ms, 0
    while True:
        if timeout_ms and probes_out > 0 and now >= timeout_ms:
            return now / 1000
        if not timeout_ms and probes_out >= cfg.count:
            return now / 1000
        probes_out += 1
        now += interval_ms


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (KeepaliveConfig(60, 10, 5), 110),
        (KeepaliveConfig(7200, 75, 9), 7875),
        # fractions are stored rounded up to whole seconds: 1 + 2 * 3
        (KeepaliveConfig(0.5, 1.5, 3), 7),
        (KeepaliveConfig(59.2, 9.01, 4), 100),
        (KeepaliveConfig(1e-9, 1e-9, 1), 2),
        # a user timeout replaces the count: death at the first tick >= user_timeout
        (KeepaliveConfig(60, 10, 5, user_timeout=110), 110),
        (KeepaliveConfig(60, 10, 5, user_timeout=115), 120),
        (KeepaliveConfig(60, 10, 5, user_timeout=200), 200),
        (KeepaliveConfig(60, 10, 1, user_timeout=1000), 1000),
        # shorter than idle: still the first probe tick after the first probe
        (KeepaliveConfig(60, 10, 5, user_timeout=30), 70),
        (KeepaliveConfig(60, 10, 5, user_timeout=0.0001), 70),
        # user timeout is stored in whole ms, rounded up: 100.0004 s -> 100.001 s -> 110
        (KeepaliveConfig(60, 10, 5, user_timeout=100.0004), 110),
        (KeepaliveConfig(60, 10, 5, user_timeout=100.0), 100),
        (KeepaliveConfig(59.5, 9.5, 5, user_timeout=100.0005), 110),
    ],
    ids=case_id,
)
def test_linux_detection_bound(linux: Platform, cfg: KeepaliveConfig, expected: float) -> None:
    assert cfg.detection_bound_on(linux) == pytest.approx(expected, abs=1e-9)
    assert linux_detection_oracle(cfg) == pytest.approx(expected, abs=1e-9)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="detection_bound uses the running platform; this case checks Linux's rules",
)
def test_detection_bound_property_uses_the_running_platform_on_linux() -> None:
    assert KeepaliveConfig(0.5, 1.5, 3).detection_bound == 7
    assert KeepaliveConfig(60, 10, 5, user_timeout=115).detection_bound == 120


linux_seconds = st.one_of(
    st.integers(1, 3000),
    st.integers(0, 3).flatmap(
        lambda k: st.integers(1, 3000 * 10**k).map(lambda n: float(Fraction(n, 10**k)))
    ),
)
linux_user_timeout = st.none() | st.builds(lambda n: n / 1000, st.integers(1, 6_000_000))


@given(
    idle=linux_seconds,
    interval=linux_seconds,
    count=st.integers(1, 127),
    user_timeout=linux_user_timeout,
)
@example(idle=60, interval=10, count=5, user_timeout=None)
@example(idle=1, interval=1, count=1, user_timeout=0.001)
def test_linux_detection_bound_matches_the_kernel_timer(
    linux: Platform, idle: float, interval: float, count: int, user_timeout: float | None
) -> None:
    cfg = KeepaliveConfig(idle, interval, count, user_timeout)
    bound = cfg.detection_bound_on(linux)
    assert bound == pytest.approx(linux_detection_oracle(cfg), abs=1e-9)
    if user_timeout is None:
        assert bound >= cfg.probing_time, "rounding up never shortens the bound"


def test_linux_detection_bound_refuses_a_huge_user_timeout(linux: Platform) -> None:
    with pytest.raises(InvalidSetting) as caught:
        KeepaliveConfig(user_timeout=1e306).detection_bound_on(linux)
    assert caught.value.platform == "Linux"


def test_linux_detection_bound_refuses_values_outside_linux_ranges(linux: Platform) -> None:
    with pytest.raises(InvalidSetting) as caught:
        KeepaliveConfig(count=1000).detection_bound_on(linux)
    assert caught.value.platform == "Linux"
    assert "1..127" in str(caught.value)


# -- before_idle_timeout --------------------------------------------------------------------------


def assert_probes_beat_the_middlebox(
    cfg: KeepaliveConfig, idle_timeout: float, linux: Platform
) -> None:
    """The first probe and every probe after it come strictly before the flow is forgotten,
    both as configured and as Linux stores the values (whole seconds, rounded up)."""
    assert 0 < cfg.idle < idle_timeout
    assert 0 < cfg.interval < idle_timeout
    plan = linux.plan(cfg)
    for setting in ("idle", "interval"):
        result = plan.result(setting)
        assert result is not None
        assert result.stored is not None
        assert result.stored < idle_timeout, (setting, result)


@pytest.mark.parametrize("idle_timeout", [350, 60, 4000, 240, 350.0, 30.5])
def test_before_idle_timeout_fires_before_the_middlebox_forgets(
    linux: Platform, idle_timeout: float
) -> None:
    cfg = KeepaliveConfig.before_idle_timeout(idle_timeout)
    assert_probes_beat_the_middlebox(cfg, idle_timeout, linux)
    assert cfg.count == 5
    assert cfg.user_timeout == cfg.recommended_user_timeout
    assert cfg.idle >= idle_timeout / 2, "probing far earlier than needed wastes packets"
    assert cfg.detection_bound_on(linux) <= cfg.probing_time + cfg.interval


def test_before_idle_timeout_options(linux: Platform) -> None:
    without = KeepaliveConfig.before_idle_timeout(350, user_timeout=False)
    assert without.user_timeout is None
    assert KeepaliveConfig.before_idle_timeout(350, count=3).count == 3
    tight = KeepaliveConfig.before_idle_timeout(350, margin=0.5)
    assert_probes_beat_the_middlebox(tight, 350, linux)
    assert tight.idle <= 175


@given(
    idle_timeout=st.one_of(
        # up to 33,000 s so that idle stays within Linux's 32,767 s at the smallest margin
        st.integers(2, 33_000),
        st.floats(min_value=1.0, max_value=33_000, exclude_min=True),
    ),
    margin=st.floats(min_value=0.01, max_value=0.9),
    count=st.integers(1, 127),
)
@example(idle_timeout=1.0000001, margin=0.2, count=5)
@example(idle_timeout=2, margin=0.01, count=5)
@example(idle_timeout=33_000, margin=0.01, count=127)
def test_before_idle_timeout_property(
    linux: Platform, idle_timeout: float, margin: float, count: int
) -> None:
    cfg = KeepaliveConfig.before_idle_timeout(idle_timeout, margin=margin, count=count)
    assert_probes_beat_the_middlebox(cfg, idle_timeout, linux)
    assert cfg.count == count
    assert cfg.user_timeout == pytest.approx(cfg.idle + cfg.interval * cfg.count)
    assert cfg.interval <= cfg.idle
    assert float(cfg.idle).is_integer()
    assert float(cfg.interval).is_integer()
    linux.plan(cfg)  # within Linux's ranges: configure() would accept it


@pytest.mark.parametrize("idle_timeout", [1, 1.0, 0.5, 0.001])
def test_before_idle_timeout_refuses_timeouts_it_cannot_beat(idle_timeout: float) -> None:
    with pytest.raises(InvalidSetting) as caught:
        KeepaliveConfig.before_idle_timeout(idle_timeout)
    assert caught.value.field == "idle_timeout"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"idle_timeout": -350}, "idle_timeout"),
        ({"idle_timeout": math.nan}, "idle_timeout"),
        ({"idle_timeout": math.inf}, "idle_timeout"),
        ({"idle_timeout": True}, "idle_timeout"),
        ({"idle_timeout": "350"}, "idle_timeout"),
        ({"idle_timeout": None}, "idle_timeout"),
        ({"idle_timeout": 350, "margin": 1}, "margin"),
        ({"idle_timeout": 350, "margin": 1.5}, "margin"),
        ({"idle_timeout": 350, "margin": -0.1}, "margin"),
        ({"idle_timeout": 350, "margin": math.nan}, "margin"),
        ({"idle_timeout": 350, "margin": "0.2"}, "margin"),
        ({"idle_timeout": 350, "count": 0}, "count"),
        ({"idle_timeout": 350, "count": 2.5}, "count"),
    ],
    ids=case_id,
)
def test_before_idle_timeout_refuses_bad_arguments(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        KeepaliveConfig.before_idle_timeout(**kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, KeepaliveError)
    assert caught.value.field == field
    assert field in str(caught.value)
