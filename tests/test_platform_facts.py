"""OS facts the platform descriptions rest on, pinned to the sources that establish them.

- xnu: TCP_KEEPALIVE appears in xnu-517 (Mac OS X 10.3), TCP_RXT_CONNDROPTIME in xnu-1699
  (10.7), TCP_KEEPINTVL/TCP_KEEPCNT in xnu-2422 (OS X 10.9, Darwin 13); xnu-2050 (10.8,
  Darwin 12) has neither of the last two in bsd/netinet/tcp.h nor a case for them in
  tcp_usrreq.c, so the kernel refuses them whatever the Python build's SDK exports.
- CPython's socketmodule.c exports TCP_KEEPALIVE only under ``__APPLE__``: Windows builds have
  TCP_KEEPIDLE/TCP_KEEPINTVL (build 16299+), TCP_KEEPCNT (15063+) and SIO_KEEPALIVE_VALS.
- Oracle Solaris before 11.4: TCP_KEEPALIVE_ABORT_THRESHOLD ranges from 0 to 8 minutes.

Other OSes are exercised here on the recording fake socket of tests/fakes.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import DARWIN_PY39, DARWIN_PY310, DARWIN_PY_OLD_SDK, FakeSocket, platform_for

import keepalive
from keepalive import InvalidSetting, KeepaliveConfig, SettingStatus, UnsupportedOption
from keepalive.platforms import catalog, darwin, windows

ROOT = Path(__file__).resolve().parent.parent
SOL = 0xFFFF
SO_ON = ("setsockopt", SOL, 0x8, 1)
FULL = KeepaliveConfig(idle=60, interval=10, count=5, user_timeout=110)
DARWIN_12 = "12.6.0 Darwin Kernel Version 12.6.0: Wed Mar 20 2013"
DARWIN_13 = "13.0.0 Darwin Kernel Version 13.0.0: Thu Sep 19 2013"


def tcp(optname: int, value: object) -> tuple[str, int, int, object]:
    return ("setsockopt", 6, optname, value)


# -- macOS: which xnu has which option ----------------------------------------------------------


@pytest.mark.parametrize("namespace", [DARWIN_PY310, DARWIN_PY39, DARWIN_PY_OLD_SDK])
def test_darwin_12_strict_refuses_interval_naming_the_platform_before_any_call(
    namespace: object,
) -> None:
    # Even a Python whose SDK exports TCP_KEEPINTVL: the 10.8 kernel has no such option.
    platform = darwin.detect(namespace, DARWIN_12)
    sock = FakeSocket()
    with pytest.raises(UnsupportedOption) as raised:
        keepalive.configure(sock, FULL, platform=platform)
    message = str(raised.value)
    assert raised.value.setting == "interval"
    assert raised.value.platform == "macOS/iOS"
    assert "macOS/iOS" in message
    assert "Darwin 12" in message
    assert "TCP_KEEPINTVL" in message
    assert "OS X 10.9" in message
    assert sock.calls == []


@pytest.mark.parametrize("namespace", [DARWIN_PY310, DARWIN_PY39, DARWIN_PY_OLD_SDK])
def test_darwin_12_lenient_never_sends_keepintvl_or_keepcnt(namespace: object) -> None:
    platform = darwin.detect(namespace, DARWIN_12)
    sock = FakeSocket()
    applied = keepalive.configure(sock, FULL, platform=platform, strict=False)
    assert sock.writes() == [tcp(0x80, 110), tcp(0x10, 60), SO_ON]
    assert all(write[2] not in (0x101, 0x102) for write in sock.writes())
    for setting in ("interval", "count"):
        assert applied[setting].status is SettingStatus.UNSUPPORTED
        assert applied[setting].stored is None
        assert "Darwin 12" in applied[setting].detail
    assert applied["idle"].honoured
    assert applied["user_timeout"].honoured


def test_darwin_13_is_the_first_release_with_keepintvl_and_keepcnt() -> None:
    for namespace in (DARWIN_PY310, DARWIN_PY_OLD_SDK):
        platform = darwin.detect(namespace, DARWIN_13)
        assert platform.options["interval"].optname == 0x101
        assert platform.options["count"].optname == 0x102
    sock = FakeSocket()
    keepalive.configure(sock, FULL, platform=darwin.detect(DARWIN_PY_OLD_SDK, DARWIN_13))
    assert sock.writes() == [tcp(0x80, 110), tcp(0x10, 60), tcp(0x101, 10), tcp(0x102, 5), SO_ON]


def test_darwin_before_10_7_has_no_rxt_conndroptime() -> None:
    platform = darwin.detect(DARWIN_PY_OLD_SDK, "10.8.0 Darwin Kernel Version 10.8.0")
    assert "user_timeout" not in platform.options
    assert "xnu-1699" in platform.unsupported["user_timeout"]
    assert "Mac OS X 10.6" in platform.unsupported["user_timeout"]
    assert "idle" in platform.options
    assert "user_timeout" in darwin.detect(DARWIN_PY_OLD_SDK, "11.4.2 Darwin").options


def test_darwin_since_strings_name_the_first_xnu_release() -> None:
    options = platform_for("macOS, Python 3.10+").options
    assert options["idle"].since.startswith("Mac OS X 10.3 (xnu-517)")
    assert options["user_timeout"].since.startswith("Mac OS X 10.7 (xnu-1699)")
    for setting in ("interval", "count"):
        assert options[setting].since.startswith("OS X 10.9 (xnu-2422, Darwin 13)")  # type: ignore[index]
    for spec in options.values():
        assert "unverified" not in spec.since
        assert "10.0" not in spec.since
        assert "10.8" not in spec.since


def test_generated_platform_doc_carries_the_corrected_since_strings() -> None:
    text = (ROOT / "docs" / "platforms.md").read_text(encoding="utf-8")
    assert "Mac OS X 10.3 (xnu-517)" in text
    assert "Mac OS X 10.7 (xnu-1699)" in text
    assert "OS X 10.9 (xnu-2422, Darwin 13)" in text
    for stale in ("Mac OS X 10.0", "10.6 or earlier", "OS X 10.8 (Darwin 12)"):
        assert stale not in text


# -- Windows: what CPython really exports -------------------------------------------------------

WINDOWS_VARIANTS = [item for item in catalog.VARIANTS if item.sys_platform == "win32"]


@pytest.mark.parametrize("item", WINDOWS_VARIANTS, ids=lambda item: item.label)
def test_windows_namespaces_have_no_tcp_keepalive(item: catalog.Variant) -> None:
    # socketmodule.c adds TCP_KEEPALIVE only under __APPLE__.
    assert not hasattr(item.namespace, "TCP_KEEPALIVE")
    assert item.namespace.SIO_KEEPALIVE_VALS == windows.SIO_KEEPALIVE_VALS


def test_windows_namespaces_follow_cpythons_build_checks() -> None:
    def names(label: str) -> set[str]:
        namespace = catalog.variant(label).namespace
        return {name for name in vars(namespace) if name.startswith("TCP_")}

    assert names("Windows 10 1709+") == {"TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"}
    assert names("Windows 10 1703-1708") == {"TCP_KEEPCNT"}
    assert names("Windows before 10 1703") == set()


def test_windows_1709_sets_idle_through_tcp_keepidle() -> None:
    platform = platform_for("Windows 10 1709+")
    assert (platform.options["idle"].name, platform.options["idle"].optname) == ("TCP_KEEPIDLE", 3)


# -- Solaris before 11.4: the abort threshold holds 0 to 8 minutes ------------------------------


def test_old_solaris_accepts_an_abort_threshold_of_exactly_eight_minutes() -> None:
    sock = FakeSocket()
    cfg = KeepaliveConfig(idle=60, interval=60, count=8)
    keepalive.configure(sock, cfg, platform=platform_for("Solaris before 11.4"))
    assert sock.writes() == [SO_ON, tcp(0x16, 60000), tcp(0x17, 480000)]


def test_old_solaris_strict_refuses_more_than_eight_minutes_before_any_call() -> None:
    platform = platform_for("Solaris before 11.4")
    sock = FakeSocket()
    with pytest.raises(InvalidSetting) as raised:
        keepalive.configure(sock, idle=60, interval=61, count=8, platform=platform)
    message = str(raised.value)
    assert raised.value.field == "interval"
    assert raised.value.value == 61
    assert raised.value.platform == "Solaris (before 11.4)"
    assert "Solaris (before 11.4)" in message
    assert "0.001..480 s" in message
    assert "8 x 61 s = 488 s" in message
    assert "TCP_KEEPALIVE_ABORT_THRESHOLD" in message
    assert sock.calls == []


def test_old_solaris_lenient_reports_an_oversized_threshold_as_not_honoured() -> None:
    platform = platform_for("Solaris before 11.4")
    sock = FakeSocket()
    cfg = KeepaliveConfig(idle=60, interval=75, count=9, user_timeout=110)
    applied = keepalive.configure(sock, cfg, platform=platform, strict=False)
    assert sock.writes() == [SO_ON, tcp(0x16, 60000), tcp(0x11, 110000)]
    for setting in ("interval", "count"):
        result = applied[setting]
        assert result.status is SettingStatus.UNSUPPORTED
        assert not result.honoured
        assert result.stored is None
        assert "675 s" in result.detail
        assert "not set" in result.detail
    assert not applied.fully_honoured
    # Not set: the system's abort interval (8 min by default) follows the first probe.
    assert platform.detection_bound(cfg) == 60 + 480
    assert platform.detection_bound(KeepaliveConfig(idle=60, interval=10, count=5)) == 110
