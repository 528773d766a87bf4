"""The pure rules of keepalive.installer: patterns, selection, the application's own values, and
the KEEPALIVE_INSTALL format. No socket, no clock."""

from __future__ import annotations

import pytest

from keepalive import InvalidSetting, InvalidSettingType, KeepaliveConfig
from keepalive._install_rules import (
    APP_SET,
    EXCLUDED,
    LOOPBACK,
    NO_RULE,
    InstallSpec,
    Rule,
    Selector,
    fill,
    format_env,
    parse_env,
    parse_pattern,
)

DB = KeepaliveConfig(idle=20, interval=5, count=3, user_timeout=35)
REST = KeepaliveConfig(idle=60)


def selector(*rules: Rule, exclude: tuple[str, ...] = (), loopback: bool = False) -> Selector:
    return Selector(rules, tuple(parse_pattern(p, field="exclude") for p in exclude), loopback)


# -- patterns ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "port", "names", "expected"),
    [
        ("*", "10.0.0.1", 1, (), True),
        ("*:5432", "10.0.0.1", 5432, (), True),
        ("*:5432", "10.0.0.1", 5433, (), False),
        ("*:8000-8999", "10.0.0.1", 8999, (), True),
        ("*:8000-8999", "10.0.0.1", 7999, (), False),
        ("10.0.0.0/8", "10.200.3.4", 80, (), True),
        ("10.0.0.0/8", "11.0.0.1", 80, (), False),
        ("10.0.0.0/8", "::ffff:10.1.2.3", 80, (), True),  # an IPv4-mapped IPv6 address
        ("10.0.0.5", "10.0.0.5", 80, (), True),
        ("10.0.0.5", "10.0.0.6", 80, (), False),
        ("10.0.0.5:443", "10.0.0.5", 80, (), False),
        ("fd00::/8", "fd12::1", 80, (), True),
        ("fd00::/8", "fe80::1", 80, (), False),
        ("[fd00::/8]:5432", "fd12::1", 5432, (), True),
        ("[fd00::/8]:5432", "fd12::1", 80, (), False),
        ("[2001:db8::1]", "2001:db8::1", 80, (), True),
        ("db.internal", "10.0.0.7", 5432, ("db.internal",), True),
        ("DB.Internal.", "10.0.0.7", 5432, ("db.internal",), True),  # case, trailing dot
        ("db.internal", "10.0.0.7", 5432, ("cache.internal",), False),
        ("*.internal:5432", "10.0.0.7", 5432, ("a.b.internal",), True),
        ("*.internal:5432", "10.0.0.7", 6379, ("a.b.internal",), False),
        ("*.internal", "10.0.0.7", 1, ("internal",), False),
        ("db?.internal", "10.0.0.7", 1, ("db1.internal",), True),
        ("db.internal", "10.0.0.7", 1, (), False),  # no name known for the address
        ("10.0.0.0/8", None, 1, ("db.internal",), False),  # a name alone never matches a network
    ],
)
def test_pattern_matches(
    pattern: str, host: str | None, port: int, names: tuple[str, ...], expected: bool
) -> None:
    import ipaddress

    ip = None if host is None else ipaddress.ip_address(host)
    assert parse_pattern(pattern).matches(ip, names, port) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty pattern"),
        ("   ", "empty pattern"),
        ("*:0", "port '0'"),
        ("*:65536", "port '65536'"),
        ("*:90-80", "port '90-80'"),
        ("*:http", "port 'http'"),
        ("10.0.0.1/8", "has host bits set"),
        ("10.0.0.0/33", "a network"),
        ("[fd00::1", "']' missing"),
        ("[fd00::1]x", "unexpected 'x'"),
        ("fd00::zz", "an IPv6 address or network"),
        ("db internal", "is not a host name or glob"),
        ("a,b", "is not a host name or glob"),
        ("a;b", "is not a host name or glob"),
    ],
)
def test_bad_patterns_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidSetting, match="only") as caught:
        parse_pattern(text)
    assert message in str(caught.value)


def test_a_pattern_must_be_a_string() -> None:
    with pytest.raises(InvalidSettingType):
        parse_pattern(5432)
    with pytest.raises(InvalidSettingType):
        Rule(DB, only=5432)  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingType):
        Rule("idle=5")  # type: ignore[arg-type]


# -- selection -----------------------------------------------------------------------------------


def test_first_matching_rule_wins_and_unmatched_destinations_are_skipped() -> None:
    chosen = selector(
        Rule(DB, only=["*.db.internal:5432", "10.9.0.0/16"]), Rule(REST, only="*:443")
    )
    assert chosen.select("10.1.1.1", 5432, ("pg.db.internal",)) == 0
    assert chosen.select("10.9.3.3", 80) == 0
    assert chosen.select("10.1.1.1", 443, ("pg.db.internal",)) == 1
    assert chosen.select("10.1.1.1", 80) == NO_RULE


def test_a_rule_without_patterns_takes_every_destination() -> None:
    chosen = selector(Rule(DB, only=["*:5432"]), Rule(REST))
    assert chosen.select("192.0.2.1", 5432) == 0
    assert chosen.select("192.0.2.1", 80) == 1
    assert chosen.select("2001:db8::1", 80) == 1


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::", "localhost"]
)
def test_loopback_is_left_alone_unless_asked(host: str) -> None:
    assert selector(Rule(REST)).select(host, 80) == LOOPBACK
    assert selector(Rule(REST), loopback=True).select(host, 80) == 0


def test_exclusions_win_over_rules() -> None:
    chosen = selector(Rule(REST), exclude=("10.0.0.0/8", "*.local"))
    assert chosen.select("10.1.2.3", 80) == EXCLUDED
    assert chosen.select("192.0.2.9", 80, ("printer.local",)) == EXCLUDED
    assert chosen.select("192.0.2.9", 80) == 0


def test_a_name_given_to_connect_is_matched_as_a_host_name() -> None:
    chosen = selector(Rule(DB, only="db.internal"), Rule(REST, only="10.0.0.0/8"))
    assert chosen.select("DB.internal", 5432) == 0
    assert chosen.select("other.internal", 5432) == NO_RULE
    assert chosen.uses_names
    assert not selector(Rule(REST, only="10.0.0.0/8")).uses_names


def test_scope_ids_do_not_hide_an_address() -> None:
    chosen = selector(Rule(REST, only="fe80::/10"))
    assert chosen.select("fe80::1%eth0", 80) == 0


# -- the application's own values ----------------------------------------------------------


def test_nothing_set_by_the_application_applies_the_rule_whole() -> None:
    assert fill(DB, {}) == (DB, ())


def test_values_set_by_the_application_are_kept_and_the_rest_filled_in() -> None:
    merged, kept = fill(DB, {"idle": 45.0, "count": 9.0})
    assert kept == ("idle", "count")
    assert merged == KeepaliveConfig(idle=45, interval=5, count=9, user_timeout=35)


def test_everything_set_by_the_application_means_nothing_to_do() -> None:
    assert fill(REST, {"idle": 1.0, "interval": 2.0, "count": 3.0}) == (
        None,
        ("idle", "interval", "count"),
    )
    # ... and a user timeout only matters when the rule sets one
    assert fill(REST, {"idle": 1.0, "interval": 2.0, "count": 3.0, "user_timeout": 4.0})[0] is None
    merged, kept = fill(DB, {"idle": 1.0, "interval": 2.0, "count": 3.0})
    assert merged == KeepaliveConfig(idle=1, interval=2, count=3, user_timeout=35)
    assert kept == ("idle", "interval", "count")


def test_app_set_is_a_skip_reason() -> None:
    assert APP_SET == "set by the application"


# -- KEEPALIVE_INSTALL ---------------------------------------------------------------------------


def test_env_rules_flags_and_defaults() -> None:
    spec = parse_env(
        " idle=20 , interval=5, count=3, user_timeout=35, only=*.db.internal:5432, "
        "only=10.9.0.0/16 ; idle=60 ; exclude=*.local, loopback=yes, override=No, strict=1"
    )
    assert spec.rules == (
        Rule(DB, only=("*.db.internal:5432", "10.9.0.0/16")),
        Rule(KeepaliveConfig(idle=60)),
    )
    assert [p.text for p in spec.exclude] == ["*.local"]
    assert (spec.loopback, spec.override, spec.strict) == (True, False, True)


@pytest.mark.parametrize(
    ("value", "rules"),
    [
        ("defaults", (Rule(),)),
        ("loopback=yes", (Rule(),)),  # no rule given: the defaults for every destination
        ("idle=7;", (Rule(KeepaliveConfig(idle=7)),)),
        ("only=*:5432; defaults", (Rule(only="*:5432"), Rule())),
        ("count=2,only=db", (Rule(KeepaliveConfig(count=2), only="db"),)),
    ],
)
def test_env_forms(value: str, rules: tuple[Rule, ...]) -> None:
    assert parse_env(value).rules == rules


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "the value is empty"),
        ("  ", "the value is empty"),
        ("idle", "KEEPALIVE_INSTALL='idle' is not allowed"),
        ("idle=abc", "idle='abc' is not allowed: expected a number of seconds"),
        ("idle=-1", "idle=-1.0 is not allowed"),
        ("idle=nan", "idle=nan is not allowed"),
        ("count=2.5", "count='2.5' is not allowed: expected a whole number"),
        ("count=0", "count=0 is not allowed"),
        ("idle=5,idle=6", "idle given twice"),
        ("loopback=maybe", "loopback='maybe' is not allowed: expected yes or no"),
        ("loopback=yes;loopback=no", "loopback given twice"),
        ("idel=5", "unknown key 'idel'"),
        ("only=", "empty pattern"),
        ("exclude=10.0.0.1/8", "has host bits set"),
        (";", None),  # nothing but separators: no rule is not an error...
    ],
)
def test_bad_env_values_are_refused_with_the_reason(value: str, message: str | None) -> None:
    if message is None:
        assert parse_env(value).rules == (Rule(),)  # ... it means the defaults
        return
    with pytest.raises(InvalidSetting) as caught:
        parse_env(value)
    assert message in str(caught.value)


def test_env_is_a_str() -> None:
    with pytest.raises(InvalidSettingType):
        parse_env(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        InstallSpec((Rule(),)),
        InstallSpec(
            (Rule(DB, only=("*.db.internal:5432", "[fd00::/8]:5432")), Rule(REST)),
            (parse_pattern("10.9.0.0/16"),),
            loopback=True,
            override=True,
            strict=True,
        ),
        InstallSpec((Rule(KeepaliveConfig(idle=0.5, interval=1.25, count=127)),)),
    ],
)
def test_format_env_round_trips(spec: InstallSpec) -> None:
    text = format_env(spec)
    assert parse_env(text) == spec
    assert "\n" not in text


def test_rules_describe_themselves() -> None:
    assert str(Rule(DB, only="*:5432")) == "*:5432 -> idle=20,interval=5,count=3,user_timeout=35"
    assert str(Rule(REST)) == "* -> idle=60,interval=10,count=5"
