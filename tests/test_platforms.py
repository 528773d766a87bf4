"""Every platform module's plans, checked through `keepalive.configure` on a recording fake.

Each OS is described by `keepalive.platforms.detect()` fed with that OS's socket-module
namespace (tests/fakes.py, from keepalive/platforms/catalog.py), so macOS, Windows (both
paths), the BSDs and Solaris/illumos are exercised here on Linux: the exact calls, their order,
rounding, ranges, strict versus lenient, restore-on-failure, inspect(), socket_options() and the
detection bound. The last test pins our Linux numbers to this machine's real socket module.
"""

from __future__ import annotations

import dataclasses
import errno
import pickle
import socket
import sys

import pytest
from fakes import (
    DARWIN_PY39,
    DARWIN_PY_OLD_SDK,
    ILLUMOS,
    OPENBSD,
    SOLARIS_OLD,
    WINDOWS_OLD,
    FakeSocket,
    platform_for,
)
from hypothesis import given
from hypothesis import strategies as st

import keepalive
import keepalive.sockets as keepalive_sockets
from keepalive import (
    InvalidSetting,
    KeepaliveConfig,
    SettingStatus,
    SocketOptionError,
    UnsupportedOption,
)
from keepalive.platforms import Platform, SetOption, bsd, catalog, darwin, solaris, windows
from keepalive.platforms import linux as linux_platform

SOL = 0xFFFF  # SOL_SOCKET on every OS here but Linux
SO_ON = ("setsockopt", SOL, 0x8, 1)  # SO_KEEPALIVE = 1
SIO = 0x98000004  # SIO_KEEPALIVE_VALS
FULL = KeepaliveConfig(idle=60, interval=10, count=5, user_timeout=110)
NO_USER_TIMEOUT = KeepaliveConfig(idle=60, interval=10, count=5)


@pytest.fixture(autouse=True)
def _no_proven_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test with no plan "proven" by an earlier one.

    keepalive.sockets skips the read-before-write (and so the restore on failure) for plans
    the kernel already accepted; a fake that refuses options on purpose breaks that premise.
    """
    monkeypatch.setattr(keepalive_sockets, "_PROVEN", set())
    for entry in ("_fast4", "_fast5", "_checked"):  # restored after
        monkeypatch.setattr(keepalive_sockets, entry, getattr(keepalive_sockets, entry))


def tcp(optname: int, value: object) -> tuple[str, int, int, object]:
    return ("setsockopt", 6, optname, value)


def configure(platform: Platform, cfg: KeepaliveConfig, **kwargs: object) -> FakeSocket:
    sock = FakeSocket()
    keepalive.configure(sock, cfg, platform=platform, **kwargs)  # type: ignore[arg-type]
    return sock


# -- the exact calls, per platform ---------------------------------------------------------

# Where the platform allows it (Platform.tcp_options_first, each OS file cites its source),
# the TCP options come first, the user-timeout option first of all, and SO_KEEPALIVE last: a
# socket that is not TCP refuses the first call before anything changed. Elsewhere
# SO_KEEPALIVE comes first, and configure() checks the socket's kind before any call.
EXACT_CALLS = {
    "macOS, Python 3.10+": (
        FULL,
        [tcp(0x80, 110), tcp(0x10, 60), tcp(0x101, 10), tcp(0x102, 5), SO_ON],
    ),
    "macOS, Python before 3.10": (
        FULL,
        [tcp(0x80, 110), tcp(0x10, 60), tcp(0x101, 10), tcp(0x102, 5), SO_ON],
    ),
    "Windows 10 1709+": (FULL, [SO_ON, tcp(3, 60), tcp(17, 10), tcp(16, 5), tcp(5, 110)]),
    # TCP_KEEPCNT before the ioctl (a refusal there changes nothing) and again after it,
    # because the ioctl may reset the probe count (Go and socket2 set it after the ioctl).
    "Windows 10 1703-1708": (
        FULL,
        [SO_ON, tcp(16, 5), tcp(5, 110), ("ioctl", 0, SIO, (1, 60000, 10000)), tcp(16, 5)],
    ),
    "Windows before 10 1703": (
        KeepaliveConfig(idle=60, interval=10, count=10, user_timeout=110),
        [SO_ON, tcp(5, 110), ("ioctl", 0, SIO, (1, 60000, 10000))],
    ),
    "FreeBSD 14+": (FULL, [tcp(68, 110), tcp(256, 60), tcp(512, 10), tcp(1024, 5), SO_ON]),
    "FreeBSD 10-13": (NO_USER_TIMEOUT, [tcp(256, 60), tcp(512, 10), tcp(1024, 5), SO_ON]),
    "DragonFly 5.8+": (NO_USER_TIMEOUT, [tcp(256, 60), tcp(512, 10), tcp(1024, 5), SO_ON]),
    "DragonFly before 5.8": (
        NO_USER_TIMEOUT,
        [tcp(256, 60000), tcp(512, 10000), tcp(1024, 5), SO_ON],
    ),
    # NetBSD counts idle and interval in half-second ticks.
    "NetBSD": (NO_USER_TIMEOUT, [tcp(3, 120), tcp(5, 20), tcp(6, 5), SO_ON]),
    "OpenBSD": (KeepaliveConfig(count=8), [SO_ON]),
    # Interval before count: illumos derives the abort threshold from the interval set.
    "illumos": (FULL, [tcp(0x11, 110000), tcp(0x22, 60), tcp(0x24, 10), tcp(0x23, 5), SO_ON]),
    "Solaris 11.4": (
        FULL,
        [SO_ON, tcp(0x1D, 60), tcp(0x1E, 10), tcp(0x1F, 5), tcp(0x11, 110000)],
    ),
    # Thresholds in ms: idle, then interval x count as the abort threshold, then user timeout.
    "Solaris before 11.4": (FULL, [SO_ON, tcp(0x16, 60000), tcp(0x17, 50000), tcp(0x11, 110000)]),
}


# The platforms whose sources show TCP options set before SO_KEEPALIVE are stored and used
# (each file cites them); the others keep SO_KEEPALIVE first, and configure() its check.
TCP_OPTIONS_FIRST = {
    "Linux",
    "macOS, Python 3.10+",
    "macOS, Python before 3.10",
    "FreeBSD 14+",
    "FreeBSD 10-13",
    "DragonFly 5.8+",
    "DragonFly before 5.8",
    "NetBSD",
    "illumos",
}


@pytest.mark.parametrize("label", [item.label for item in catalog.VARIANTS])
@pytest.mark.parametrize("cfg", [FULL, NO_USER_TIMEOUT], ids=["user timeout", "none"])
def test_tcp_options_come_first_only_where_the_platform_vouches_for_it(
    label: str, cfg: KeepaliveConfig
) -> None:
    platform = platform_for(label)
    assert platform.tcp_options_first is (label in TCP_OPTIONS_FIRST)
    operations = platform.plan(cfg, strict=False).operations
    keepalive_on = SetOption(platform.sol_socket, platform.so_keepalive, 1, "SO_KEEPALIVE")
    if platform.tcp_options_first and len(operations) > 1:
        assert operations[-1] == keepalive_on
        assert all(op.level == platform.ipproto_tcp for op in operations[:-1])  # type: ignore[union-attr]
        spec = platform.options.get("user_timeout")
        if cfg.user_timeout is not None and spec is not None:
            assert (operations[0].level, operations[0].optname) == (spec.level, spec.optname)  # type: ignore[union-attr]
    else:
        assert operations[0] == keepalive_on


@pytest.mark.parametrize("label", sorted(EXACT_CALLS))
def test_configure_makes_exactly_these_calls_in_this_order(label: str) -> None:
    cfg, expected = EXACT_CALLS[label]
    strict = label != "OpenBSD"
    sock = configure(platform_for(label), cfg, strict=strict)
    assert sock.writes() == expected


def test_every_catalog_variant_except_linux_has_an_exact_call_test() -> None:
    labels = {item.label for item in catalog.VARIANTS} - {"Linux"}
    assert labels == set(EXACT_CALLS)


@pytest.mark.parametrize("label", sorted(EXACT_CALLS))
def test_settings_reported_in_setting_order(label: str) -> None:
    cfg, _ = EXACT_CALLS[label]
    applied = keepalive.configure(FakeSocket(), cfg, platform=platform_for(label), strict=False)
    wanted = [s for s in ("idle", "interval", "count", "user_timeout") if getattr(cfg, s)]
    assert [item.setting for item in applied] == wanted


# -- macOS -----------------------------------------------------------------------------------


def test_macos_uses_tcp_keepalive_number_even_when_python_lacks_the_name() -> None:
    assert not hasattr(DARWIN_PY39, "TCP_KEEPALIVE")
    platform = darwin.detect(DARWIN_PY39, "21.6.0 Darwin Kernel Version 21.6.0")
    assert platform.options["idle"].name == "TCP_KEEPALIVE"
    assert platform.options["idle"].optname == 0x10


def test_macos_before_10_8_has_no_interval_or_count() -> None:
    platform = darwin.detect(DARWIN_PY_OLD_SDK, "11.4.2 Darwin Kernel Version 11.4.2")
    assert set(platform.options) == {"idle", "user_timeout"}
    with pytest.raises(UnsupportedOption, match="TCP_KEEPINTVL") as raised:
        keepalive.configure(FakeSocket(), NO_USER_TIMEOUT, platform=platform)
    assert raised.value.setting == "interval"
    sock = FakeSocket()
    applied = keepalive.configure(sock, NO_USER_TIMEOUT, platform=platform, strict=False)
    assert sock.writes() == [tcp(0x10, 60), SO_ON]
    assert [item.status for item in applied] == [
        SettingStatus.HONOURED,
        SettingStatus.UNSUPPORTED,
        SettingStatus.UNSUPPORTED,
    ]


def test_macos_with_an_old_sdk_on_a_new_kernel_hard_codes_interval_and_count() -> None:
    for release in ("23.4.0 Darwin Kernel Version 23.4.0", None):
        platform = darwin.detect(DARWIN_PY_OLD_SDK, release)
        assert platform.options["interval"].optname == 0x101
        assert platform.options["count"].optname == 0x102


def test_macos_rounds_fractions_up_to_whole_seconds_never_to_zero() -> None:
    platform = platform_for("macOS, Python 3.10+")
    sock = FakeSocket()
    applied = keepalive.configure(sock, idle=1.2, interval=0.001, count=3, platform=platform)
    assert sock.writes()[:2] == [tcp(0x10, 2), tcp(0x101, 1)]
    assert applied["idle"].status is SettingStatus.APPROXIMATED
    assert applied["idle"].stored == 2
    assert "TCP_KEEPALIVE" in applied["idle"].detail
    assert "2 s" in applied["idle"].detail
    assert applied["interval"].stored == 1


# -- Windows: both paths ---------------------------------------------------------------------


def test_windows_path_follows_what_the_socket_module_exposes() -> None:
    assert type(platform_for("Windows 10 1709+")) is Platform
    old = platform_for("Windows before 10 1703")
    assert isinstance(old, windows.WindowsIoctlPlatform)
    assert old.fixed == {"count": 10}
    assert "count" not in old.options
    assert "count" in platform_for("Windows 10 1703-1708").options


def test_windows_ioctl_strict_refuses_a_probe_count_other_than_ten_before_any_call() -> None:
    sock = FakeSocket()
    with pytest.raises(UnsupportedOption, match="fixed at 10") as raised:
        keepalive.configure(sock, FULL, platform=platform_for("Windows before 10 1703"))
    assert raised.value.setting == "count"
    assert sock.calls == []


def test_windows_ioctl_lenient_reports_the_fixed_count_as_approximated() -> None:
    sock = FakeSocket()
    applied = keepalive.configure(
        sock, NO_USER_TIMEOUT, platform=platform_for("Windows before 10 1703"), strict=False
    )
    assert sock.writes() == [SO_ON, ("ioctl", 0, SIO, (1, 60000, 10000))]
    count = applied["count"]
    assert (count.status, count.requested, count.stored) == (SettingStatus.APPROXIMATED, 5, 10)
    assert applied["idle"].honoured
    assert applied["interval"].honoured


def test_windows_ioctl_always_sends_every_field_in_milliseconds_rounded_up() -> None:
    sock = FakeSocket()
    applied = keepalive.configure(
        sock,
        idle=0.0004,
        interval=1.0005,
        count=10,
        platform=platform_for("Windows before 10 1703"),
    )
    assert sock.writes()[-1] == ("ioctl", 0, SIO, (1, 1, 1001))
    assert applied["idle"].stored == 0.001
    assert applied["interval"].status is SettingStatus.APPROXIMATED


def test_windows_1703_sets_keepcnt_after_the_ioctl_as_go_and_socket2_do() -> None:
    sock = configure(platform_for("Windows 10 1703-1708"), FULL)
    writes = sock.writes()
    ops = [write[0] for write in writes]
    assert ops == ["setsockopt", "setsockopt", "setsockopt", "ioctl", "setsockopt"]
    # The last word on the probe count comes after the ioctl that may have reset it.
    assert writes[-1] == tcp(16, 5)
    assert sock.value(6, 16) == 5


def test_windows_before_1703_ioctl_comes_after_every_setsockopt() -> None:
    cfg = KeepaliveConfig(idle=60, interval=10, count=10, user_timeout=110)
    sock = configure(platform_for("Windows before 10 1703"), cfg)
    assert [write[0] for write in sock.writes()] == ["setsockopt", "setsockopt", "ioctl"]


def test_windows_1703_refused_keepcnt_never_reaches_the_ioctl_and_restores() -> None:
    # A refusal of TCP_KEEPCNT must come while everything set so far can still be put back:
    # the ioctl's values cannot be read, so nothing could restore them.
    sock = FakeSocket(fail_on={(6, 16)}, initial={(SOL, 0x8): 0, (6, 16): 7})
    with pytest.raises(SocketOptionError) as raised:
        keepalive.configure(sock, FULL, platform=platform_for("Windows 10 1703-1708"))
    assert raised.value.option == "TCP_KEEPCNT"
    assert raised.value.restored
    assert all(call.op != "ioctl" for call in sock.calls)
    assert (sock.value(SOL, 0x8), sock.value(6, 16)) == (0, 7)


def test_windows_prefers_the_socket_modules_sio_keepalive_vals() -> None:
    namespace = type(WINDOWS_OLD)(**{**vars(WINDOWS_OLD), "SIO_KEEPALIVE_VALS": 0x1234})
    platform = windows.detect(namespace)
    sock = configure(platform, KeepaliveConfig(count=10))
    assert sock.writes()[-1][:3] == ("ioctl", 0, 0x1234)


def test_windows_ioctl_failure_restores_the_options_set_before_it() -> None:
    sock = FakeSocket(fail_ioctl={SIO}, initial={(SOL, 0x8): 0, (6, 16): 7, (6, 5): 30})
    with pytest.raises(SocketOptionError) as raised:
        keepalive.configure(sock, FULL, platform=platform_for("Windows 10 1703-1708"))
    assert raised.value.option == "SIO_KEEPALIVE_VALS"
    assert raised.value.restored
    assert raised.value.errno == errno.EINVAL
    assert (sock.value(SOL, 0x8), sock.value(6, 16), sock.value(6, 5)) == (0, 7, 30)


def test_windows_ioctl_path_cannot_be_expressed_as_socket_options() -> None:
    with pytest.raises(UnsupportedOption, match="SIO_KEEPALIVE_VALS"):
        keepalive.socket_options(
            KeepaliveConfig(count=10), platform=platform_for("Windows before 10 1703")
        )
    assert keepalive.socket_options(FULL, platform=platform_for("Windows 10 1709+")) == [
        (SOL, 0x8, 1),
        (6, 3, 60),
        (6, 17, 10),
        (6, 16, 5),
        (6, 5, 110),
    ]


def test_windows_ioctl_inspect_falls_back_to_registry_defaults_for_idle_and_interval() -> None:
    platform = platform_for("Windows before 10 1703")
    sock = configure(platform, KeepaliveConfig(idle=30, interval=3, count=10, user_timeout=40))
    state = keepalive.inspect(sock, platform=platform)
    assert state.enabled
    # Not readable on this path: Windows' documented defaults (the registry is absent here).
    assert (state.idle, state.interval, state.count) == (7200.0, 1.0, 10)
    assert state.source["idle"] == state.source["interval"] == "system default"
    assert (state.user_timeout, state.source["user_timeout"]) == (40.0, "socket")
    assert all(call.optname != SIO for call in sock.calls if call.op == "getsockopt")


def test_windows_detection_bound_uses_the_fixed_count_on_the_ioctl_path() -> None:
    assert platform_for("Windows before 10 1703").detection_bound(FULL) == 60 + 10 * 10
    assert platform_for("Windows 10 1703-1708").detection_bound(FULL) == 60 + 10 * 5
    assert FULL.detection_bound_on(platform_for("Windows 10 1709+")) == 110


def test_windows_count_above_255_is_refused_naming_platform_and_range() -> None:
    with pytest.raises(InvalidSetting) as raised:
        keepalive.configure(
            FakeSocket(), count=300, platform=platform_for("Windows 10 1709+"), strict=False
        )
    assert raised.value.field == "count"
    assert "Windows 10 1709+" in str(raised.value)
    assert "1..255 probes" in str(raised.value)


# -- BSDs ------------------------------------------------------------------------------------


def test_freebsd_user_timeout_needs_14_strict_raises_lenient_skips() -> None:
    platform = platform_for("FreeBSD 10-13")
    sock = FakeSocket()
    with pytest.raises(UnsupportedOption, match="FreeBSD 14") as raised:
        keepalive.configure(sock, FULL, platform=platform)
    assert raised.value.setting == "user_timeout"
    assert sock.calls == []
    applied = keepalive.configure(sock, FULL, platform=platform, strict=False)
    assert applied["user_timeout"].status is SettingStatus.UNSUPPORTED
    assert all(write[2] != 68 for write in sock.writes())


def test_freebsd_unknown_release_does_not_guess_maxunacktime() -> None:
    platform = bsd.detect("freebsd14", catalog.FREEBSD, None)
    assert "user_timeout" not in platform.options
    assert "unknown release" in platform.unsupported["user_timeout"]


def test_dragonfly_units_follow_the_release() -> None:
    old = platform_for("DragonFly before 5.8")
    new = platform_for("DragonFly 5.8+")
    assert old.options["idle"].unit == "ms"
    assert new.options["idle"].unit == "s"
    # Unknown release: counted as 5.8 or later.
    assert bsd.detect("dragonfly", catalog.DRAGONFLY, None).options["idle"].unit == "s"


def test_dragonfly_before_5_8_refuses_less_than_one_tick() -> None:
    platform = platform_for("DragonFly before 5.8")
    with pytest.raises(InvalidSetting, match="DragonFly") as raised:
        keepalive.configure(FakeSocket(), idle=0.005, platform=platform, strict=False)
    assert "0.01..2147483.647 s in steps of 1/1000 s" in str(raised.value)
    sock = configure(platform, KeepaliveConfig(idle=0.0101, interval=1, count=2))
    assert sock.writes()[0] == tcp(256, 11)


def test_netbsd_values_are_half_second_ticks_rounded_up() -> None:
    sock = FakeSocket()
    applied = keepalive.configure(
        sock, idle=0.3, interval=2.25, count=3, platform=platform_for("NetBSD")
    )
    assert sock.writes()[:2] == [tcp(3, 1), tcp(5, 5)]
    assert (applied["idle"].stored, applied["interval"].stored) == (0.5, 2.5)
    assert applied["idle"].status is SettingStatus.APPROXIMATED
    assert "1/2 s" in applied["idle"].detail


def test_openbsd_strict_refuses_and_lenient_only_turns_keepalive_on() -> None:
    platform = platform_for("OpenBSD")
    sock = FakeSocket()
    with pytest.raises(UnsupportedOption, match="system-wide") as raised:
        keepalive.configure(sock, KeepaliveConfig(), platform=platform)
    assert raised.value.setting == "idle"
    assert sock.calls == []
    applied = keepalive.configure(sock, KeepaliveConfig(count=8), platform=platform, strict=False)
    assert sock.writes() == [SO_ON]
    statuses = {item.setting: item.status for item in applied}
    # The probe count is fixed at 8 on OpenBSD, so asking for 8 is honoured.
    assert statuses == {
        "idle": SettingStatus.UNSUPPORTED,
        "interval": SettingStatus.UNSUPPORTED,
        "count": SettingStatus.HONOURED,
    }
    assert keepalive.socket_options(platform=platform, strict=False) == [(SOL, 0x8, 1)]


def test_openbsd_sysctl_unit_follows_the_release() -> None:
    def idle_scale(release: str) -> int:
        source = bsd.detect("openbsd", OPENBSD, release).default_source("idle")
        assert source is not None
        return source.scale

    assert idle_scale("6.9 GENERIC.MP#1") == 2
    assert idle_scale("7.5 GENERIC.MP#82") == 1


def test_bsd_detect_refuses_other_systems() -> None:
    with pytest.raises(ValueError, match="haiku"):
        bsd.detect("haiku1", OPENBSD, None)


# -- Solaris and illumos -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "release", "name", "idle_optname"),
    [
        (ILLUMOS, None, "illumos", 0x22),
        (SOLARIS_OLD, "5.11 omnios-r151046-b5f2c0ba", "illumos", 0x22),
        (SOLARIS_OLD, "5.11 joyent_20240101T000000Z", "illumos", 0x22),
        (catalog.SOLARIS_11_4, None, "Solaris 11.4", 0x1D),
        (SOLARIS_OLD, "5.11 11.4.0.15.0", "Solaris 11.4", 0x1D),
        (SOLARIS_OLD, "5.11 11.3", "Solaris (before 11.4)", 0x16),
        (SOLARIS_OLD, "5.10 Generic_150400-59", "Solaris (before 11.4)", 0x16),
        (SOLARIS_OLD, None, "Solaris (before 11.4)", 0x16),
    ],
)
def test_solaris_family_is_decided_from_namespace_then_release(
    namespace: object, release: str | None, name: str, idle_optname: int
) -> None:
    platform = solaris.detect(namespace, release)
    assert platform.name == name
    assert platform.options["idle"].optname == idle_optname


def test_old_solaris_reports_interval_and_count_as_approximated() -> None:
    applied = keepalive.configure(FakeSocket(), FULL, platform=platform_for("Solaris before 11.4"))
    for setting in ("interval", "count"):
        result = applied[setting]
        assert result.status is SettingStatus.APPROXIMATED
        assert result.option == "TCP_KEEPALIVE_ABORT_THRESHOLD"
        assert "interval x count = 50 s" in result.detail
    assert platform_for("Solaris before 11.4").detection_bound(FULL) == 110


def test_old_solaris_refuses_an_abort_threshold_it_cannot_hold() -> None:
    with pytest.raises(InvalidSetting, match="Solaris") as raised:
        keepalive.configure(
            FakeSocket(),
            interval=2_000_000,
            count=2,
            platform=platform_for("Solaris before 11.4"),
        )
    assert raised.value.field == "interval"
    assert "interval x count" in str(raised.value)


@pytest.mark.parametrize("label", ["illumos", "Solaris before 11.4"])
def test_absurdly_large_interval_is_an_invalid_setting_not_an_overflow(label: str) -> None:
    with pytest.raises(InvalidSetting) as raised:
        keepalive.configure(FakeSocket(), interval=1e306, platform=platform_for(label))
    assert raised.value.field == "interval"


def test_illumos_refuses_interval_beyond_the_retransmission_bound() -> None:
    with pytest.raises(InvalidSetting) as raised:
        keepalive.configure(FakeSocket(), interval=61, platform=platform_for("illumos"))
    assert raised.value.platform == "illumos"
    assert "1..60 s" in str(raised.value)


def test_illumos_refuses_an_interval_times_count_the_kernel_would_overflow() -> None:
    with pytest.raises(InvalidSetting, match="interval x count") as raised:
        keepalive.configure(
            FakeSocket(), interval=60, count=40_000, platform=platform_for("illumos")
        )
    assert raised.value.field == "count"


def test_solaris_11_4_refuses_idle_below_ten_seconds() -> None:
    with pytest.raises(InvalidSetting, match=r"Solaris 11\.4") as raised:
        keepalive.configure(FakeSocket(), idle=5, platform=platform_for("Solaris 11.4"))
    assert "10..864000 s" in str(raised.value)


# -- ranges are checked before any call, whatever strict says ---------------------------------


@pytest.mark.parametrize(
    ("label", "field", "value"),
    [
        ("macOS, Python 3.10+", "user_timeout", 3_000_000),
        ("macOS, Python 3.10+", "idle", 5_000_000),
        ("Windows before 10 1703", "idle", 5_000_000),
        ("FreeBSD 14+", "interval", 5_000_000),
        ("NetBSD", "idle", 30_000_000),
        ("illumos", "idle", 864_001),
        ("Solaris before 11.4", "idle", 9),
    ],
)
@pytest.mark.parametrize("strict", [True, False])
def test_out_of_range_raises_invalid_setting_naming_platform_and_range(
    label: str, field: str, value: float, strict: bool
) -> None:
    platform = platform_for(label)
    sock = FakeSocket()
    cfg = KeepaliveConfig(count=10, **{field: value})
    with pytest.raises(InvalidSetting) as raised:
        keepalive.configure(sock, cfg, platform=platform, strict=strict)
    assert raised.value.field == field
    assert raised.value.platform == platform.name
    spec = platform.options[field]  # type: ignore[index]
    assert spec.describe_range() in str(raised.value)
    assert sock.calls == []


# -- restore on failure ------------------------------------------------------------------------

READABLE_LABELS = [
    "macOS, Python 3.10+",
    "Windows 10 1709+",
    "FreeBSD 14+",
    "DragonFly 5.8+",
    "illumos",
    "Solaris 11.4",
]


@pytest.mark.parametrize("label", READABLE_LABELS)
def test_refused_third_option_restores_the_first_two_and_names_the_option(label: str) -> None:
    platform = platform_for(label)
    plan = platform.plan(NO_USER_TIMEOUT)
    first, second, third = plan.operations[:3]
    assert all(isinstance(op, SetOption) for op in (first, second, third))
    initial = {(op.level, op.optname): 7 for op in plan.operations if isinstance(op, SetOption)}
    initial[(platform.sol_socket, platform.so_keepalive)] = 0
    sock = FakeSocket(fail_on={(third.level, third.optname)}, initial=initial)  # type: ignore[union-attr]
    with pytest.raises(SocketOptionError) as raised:
        keepalive.configure(sock, NO_USER_TIMEOUT, platform=platform)
    assert raised.value.option == third.name
    assert third.name in str(raised.value)
    assert raised.value.restored
    for op in (first, second):
        assert sock.value(op.level, op.optname) == initial[(op.level, op.optname)]  # type: ignore[union-attr]
    # The refused option came third and last; then the first two were put back, newest first.
    sets = [(c.level, c.optname, c.value) for c in sock.calls if c.op == "setsockopt"]
    keys = [(op.level, op.optname) for op in (first, second, third)]  # type: ignore[union-attr]
    assert [s[:2] for s in sets] == [*keys, keys[1], keys[0]]
    assert [s[2] for s in sets[3:]] == [initial[keys[1]], initial[keys[0]]]


def test_refused_option_on_netbsd_cannot_restore_unreadable_options() -> None:
    platform = platform_for("NetBSD")
    sock = FakeSocket(readable={(SOL, 0x8)}, fail_on={(6, 5)}, initial={(SOL, 0x8): 0})
    with pytest.raises(SocketOptionError, match="restoring the earlier options failed") as raised:
        keepalive.configure(sock, NO_USER_TIMEOUT, platform=platform)
    assert raised.value.option == "TCP_KEEPINTVL"
    assert not raised.value.restored
    assert sock.value(SOL, 0x8) == 0  # the readable one was still put back


# -- inspect() -------------------------------------------------------------------------------


@pytest.mark.parametrize("label", READABLE_LABELS)
def test_inspect_reads_back_what_configure_set(label: str) -> None:
    platform = platform_for(label)
    sock = configure(platform, NO_USER_TIMEOUT)
    state = keepalive.inspect(sock, platform=platform)
    assert state.enabled
    assert (state.idle, state.interval, state.count) == (60.0, 10.0, 5)
    assert {state.source[s] for s in ("idle", "interval", "count")} == {"socket"}
    assert state.detection_bound == 110


def test_inspect_decodes_milliseconds_on_old_dragonfly() -> None:
    platform = platform_for("DragonFly before 5.8")
    state = keepalive.inspect(configure(platform, NO_USER_TIMEOUT), platform=platform)
    assert (state.idle, state.interval, state.count) == (60.0, 10.0, 5)


def test_inspect_reports_zero_user_timeout_as_none() -> None:
    platform = platform_for("macOS, Python 3.10+")
    state = keepalive.inspect(configure(platform, NO_USER_TIMEOUT), platform=platform)
    assert (state.user_timeout, state.source["user_timeout"]) == (None, "none")


@pytest.mark.parametrize("label", ["NetBSD", "OpenBSD"])
def test_inspect_falls_back_to_system_defaults_where_nothing_reads_back(label: str) -> None:
    platform = platform_for(label)
    sock = FakeSocket(readable={(SOL, 0x8)}, initial={(SOL, 0x8): 1})
    state = keepalive.inspect(sock, platform=platform)
    # This Linux machine has no net.inet.* sysctls: the documented defaults are reported.
    assert (state.idle, state.interval, state.count) == (7200.0, 75.0, 8)
    assert {state.source[s] for s in ("idle", "interval", "count")} == {"system default"}


def test_inspect_on_old_solaris_reads_the_idle_threshold_only() -> None:
    platform = platform_for("Solaris before 11.4")
    state = keepalive.inspect(configure(platform, FULL), platform=platform)
    assert (state.idle, state.user_timeout) == (60.0, 110.0)
    assert (state.interval, state.count) == (None, None)
    assert state.source["interval"] == state.source["count"] == "none"


# -- socket_options() and the detection bound ----------------------------------------------------


def test_socket_options_match_the_configure_calls() -> None:
    platform = platform_for("illumos")
    options = keepalive.socket_options(FULL, platform=platform)
    writes = configure(platform, FULL).writes()
    assert [("setsockopt", *option) for option in options] == writes


@pytest.mark.parametrize(
    ("label", "cfg", "bound"),
    [
        ("Linux", FULL, 110.0),
        ("macOS, Python 3.10+", FULL, 110.0),
        ("FreeBSD 10-13", NO_USER_TIMEOUT, 110.0),
        ("NetBSD", KeepaliveConfig(idle=0.3, interval=0.3, count=5), 0.5 + 0.5 * 5),
        ("DragonFly before 5.8", KeepaliveConfig(idle=0.0101, interval=1, count=2), 2.011),
        ("OpenBSD", FULL, 7200 + 75 * 8),  # nothing per socket: the system defaults
        ("Solaris before 11.4", FULL, 110.0),
        ("Windows before 10 1703", FULL, 160.0),
    ],
)
def test_detection_bound_per_platform(label: str, cfg: KeepaliveConfig, bound: float) -> None:
    assert platform_for(label).detection_bound(cfg) == pytest.approx(bound)


# -- properties of every description ------------------------------------------------------------

PLATFORM_LABELS = [item.label for item in catalog.VARIANTS if item.label != "Linux"]


@pytest.mark.parametrize("label", PLATFORM_LABELS)
def test_every_option_names_its_header_and_since(label: str) -> None:
    platform = platform_for(label)
    for spec in platform.options.values():
        assert spec.source, spec
        assert spec.since, spec
        assert 1 <= spec.minimum <= spec.maximum <= 2**32 - 1
    for setting in ("idle", "interval", "count", "user_timeout"):
        assert setting in platform.options or setting in platform.unsupported


@given(
    label=st.sampled_from(PLATFORM_LABELS),
    seconds=st.floats(min_value=0.0005, max_value=50.0, allow_nan=False),
)
def test_stored_time_is_never_below_requested_nor_zero(label: str, seconds: float) -> None:
    platform = platform_for(label)
    for setting in ("idle", "interval"):
        spec = platform.options.get(setting)
        if spec is None:
            continue
        native = spec.encode(seconds)
        assert native >= 1
        assert spec.decode(native) >= seconds - 1e-9
        assert spec.decode(native) - seconds < 1 / spec.scale + 1e-9


# -- this machine's real socket module ------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's socket module")
def test_linux_numbers_equal_the_real_socket_modules() -> None:
    platform = linux_platform.detect()
    assert platform.sol_socket == socket.SOL_SOCKET
    assert platform.so_keepalive == socket.SO_KEEPALIVE
    assert platform.ipproto_tcp == socket.IPPROTO_TCP
    for spec in platform.options.values():
        assert spec.optname == getattr(socket, spec.name), spec.name
        assert spec.level == socket.IPPROTO_TCP
    for name, number in vars(catalog.LINUX).items():
        assert getattr(socket, name) == number, name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a Linux kernel")
def test_linux_plan_applies_to_a_real_loopback_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        platform = platform_for("Linux")
        keepalive.configure(sock, FULL, platform=platform)
        state = keepalive.inspect(sock, platform=platform)
    assert (state.idle, state.interval, state.count, state.user_timeout) == (60, 10, 5, 110)


# -- the value classes: frozen dataclasses in behaviour, without importing dataclasses ---------


@pytest.mark.parametrize("label", ["Windows before 10 1703", "illumos", "Solaris before 11.4"])
def test_platform_subclasses_replace_with_their_own_fields(label: str) -> None:
    platform = platform_for(label)
    names = [field.name for field in dataclasses.fields(platform)]
    assert names[:12] == list(Platform.__match_args__)
    extra = names[12:]
    assert len(extra) == 1  # ioctl_control, max_abort_ms, abort_spec
    renamed = dataclasses.replace(platform, name="renamed")
    assert type(renamed) is type(platform)
    assert renamed.name == "renamed"
    assert getattr(renamed, extra[0]) == getattr(platform, extra[0])
    assert renamed != platform  # identity: plans are cached per platform object
    assert platform in {platform}
    assert hash(platform) == object.__hash__(platform)
    # the copy plans exactly as the original
    assert (
        renamed.plan(FULL, strict=False).operations == platform.plan(FULL, strict=False).operations
    )


def test_plans_results_and_specs_keep_their_semantics() -> None:
    linux = linux_platform.detect()
    plan = linux.plan(FULL)
    assert plan.setsockopt_args == tuple(keepalive.socket_options(FULL, platform=linux))
    assert plan != linux.plan(FULL)  # identity, like the dataclass(eq=False) it was
    assert "setsockopt_args" not in repr(plan)
    assert dataclasses.replace(plan, platform="x").setsockopt_args == plan.setsockopt_args
    result = plan.results[0]
    assert result == dataclasses.replace(result)
    assert hash(result) == hash(dataclasses.replace(result))
    assert result != dataclasses.replace(result, detail="other")
    assert repr(result).startswith("SettingOutcome(setting='idle', requested=60.0, stored=60")
    spec = linux.options["idle"]
    assert dataclasses.asdict(spec)["name"] == "TCP_KEEPIDLE"
    assert spec == dataclasses.replace(spec)
    for value in (plan.operations[0], result, spec, linux.defaults[0]):
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.name = "x"  # type: ignore[misc, union-attr]
        assert pickle.loads(pickle.dumps(value)) == value
    applied = keepalive.ConfigureResult(plan.platform, plan.results)
    assert pickle.loads(pickle.dumps(applied)) == applied
    assert applied.idle == result
    assert applied.fully_honoured
