"""Tests for keepalive.diagnostics: the hint rules on fake hosts, the middlebox table, the audit's
rules, and real audits of a child process's loopback connections. The Linux kernel parsers are
in test_diagnostics_linux.py, the check probe in test_diagnostics_check.py."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keepalive import diagnostics as diag
from keepalive.diagnostics import (
    DEFAULT_RISK_SECONDS,
    MIDDLEBOX_IDLE_TIMEOUTS,
    VIRTUAL_NIC_PREFIXES,
    ConnectionReport,
    HostFacts,
    InterfaceFacts,
)
from keepalive.diagnostics import facts as host_facts
from keepalive.errors import InvalidSetting, InvalidSettingType

SAMPLES = Path(__file__).parent / "samples"
LINUX_PROC = os.path.exists("/proc/net/tcp") and os.path.isdir("/proc/self/fd")
needs_linux = pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc/net/tcp")


# --- keepalive inference and flags -------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "timer", "expected"),
    [
        ("ESTABLISHED", "keepalive", "on"),
        ("ESTABLISHED", "none", "off"),
        ("ESTABLISHED", "retransmit", "unknown"),
        ("ESTABLISHED", "zero-window-probe", "unknown"),
        ("CLOSE_WAIT", "keepalive", "on"),
        ("CLOSE_WAIT", "none", "off"),
        ("FIN_WAIT2", "keepalive", "unknown"),
        ("LISTEN", "none", "unknown"),
        ("SYN_SENT", "retransmit", "unknown"),
        ("TIME_WAIT", "time-wait", "unknown"),
    ],
)
def test_infer_keepalive(state: str, timer: str, expected: str) -> None:
    assert diag.infer_keepalive(state, timer) == expected


def _codes(**kwargs: object) -> list[str]:
    defaults: dict[str, object] = {
        "timer": "none",
        "keepalive_timer_seconds": None,
        "probes_out": None,
        "idle_seconds": None,
        "min_age_seconds": None,
    }
    defaults.update(kwargs)
    state = str(defaults.pop("state", "ESTABLISHED"))
    keepalive = defaults.pop("keepalive")
    return [
        flag.code
        for flag in diag.assess_connection(state, keepalive, **defaults)  # type: ignore[arg-type]
    ]


def test_flags_for_connections_without_keepalive() -> None:
    assert _codes(keepalive="off") == ["no-keepalive-age-unknown"]
    assert _codes(keepalive="off", min_age_seconds=5.0, idle_seconds=5.0) == []
    assert _codes(keepalive="off", min_age_seconds=240.0, idle_seconds=1.0) == [
        "no-keepalive-long-lived"
    ]
    assert _codes(keepalive="off", min_age_seconds=100.0, idle_seconds=50.0, risk_seconds=60) == [
        "no-keepalive-long-lived"
    ]
    assert _codes(keepalive="off", state="LISTEN") == []


def test_flags_for_connections_with_keepalive() -> None:
    assert _codes(keepalive="on", timer="keepalive", keepalive_timer_seconds=30.0) == []
    assert _codes(keepalive="on", timer="keepalive", keepalive_timer_seconds=7199.0) == [
        "keepalive-probe-late"
    ]
    assert _codes(keepalive="on", timer="keepalive", keepalive_timer_seconds=5.0, probes_out=3) == [
        "keepalive-probes-unanswered"
    ]
    assert _codes(keepalive="unknown", timer="retransmit") == ["keepalive-unknown-timer"]
    assert _codes(keepalive="unknown", timer=None) == ["keepalive-unknown-platform"]


def test_long_lived_flag_message_shows_the_evidence() -> None:
    (flag,) = diag.assess_connection(
        "ESTABLISHED",
        "off",
        timer="none",
        keepalive_timer_seconds=None,
        probes_out=None,
        idle_seconds=400.4,
        min_age_seconds=900.0,
    )
    assert "long-lived established connection without keepalive" in flag.message
    assert "at least 900 s old" in flag.message
    assert "idle 400 s" in flag.message
    assert "240 s" in flag.message


# --- MAC prefixes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mac", "platform_key"),
    [
        ("00:50:56:12:34:56", "vmware"),
        ("00-0C-29-AB-CD-EF", "vmware"),
        ("0005.6912.3456", "vmware"),
        ("00:1c:14:00:00:01", "vmware"),
        ("08:00:27:aa:bb:cc", "virtualbox"),
        ("0a:00:27:00:00:00", "virtualbox-host"),
        ("52:54:00:12:34:56", "qemu-kvm"),
        ("00:15:5d:01:02:03", "hyperv"),
        ("00:1c:42:00:00:08", "parallels"),
        ("00:16:3e:11:22:33", "xen"),
        ("02:42:ac:11:00:02", "docker"),
        ("C0:FF:EE:C0:FF:EE", "docker-desktop"),
    ],
)
def test_virtual_mac_prefixes(mac: str, platform_key: str) -> None:
    nic = diag.match_virtual_mac(mac)
    assert nic is not None
    assert nic.platform == platform_key
    assert nic.source  # every entry names where it comes from


@pytest.mark.parametrize(
    "mac", ["3c:22:fb:12:34:56", "02:fc:00:00:00:01", "c0:ff:ee:00:00:01", "not a mac", "00:50:56"]
)
def test_other_macs_match_nothing(mac: str) -> None:
    assert diag.match_virtual_mac(mac) is None


def test_normalize_mac() -> None:
    assert diag.normalize_mac("00-50-56-AB-CD-EF") == "00:50:56:ab:cd:ef"
    assert diag.normalize_mac("0050.56ab.cdef") == "00:50:56:ab:cd:ef"
    assert diag.normalize_mac("00:50:56:ab:cd") is None
    assert diag.normalize_mac("zz:50:56:ab:cd:ef") is None


def test_prefix_table_is_well_formed() -> None:
    for entry in VIRTUAL_NIC_PREFIXES:
        parts = entry.prefix.split(":")
        assert all(len(part) == 2 and part == part.lower() for part in parts), entry
        int("".join(parts), 16)


# --- hint rules on fake hosts -----------------------------------------------------------------


def _iface(name: str, mac: str | None = None, *addresses: str, **extra: object) -> InterfaceFacts:
    return InterfaceFacts(name, mac, tuple(addresses), **extra)  # type: ignore[arg-type]


LO = _iface("lo", None, "127.0.0.1/8", "::1/128")


def _kinds(facts: HostFacts) -> dict[str, diag.NetworkHint]:
    return {hint.kind: hint for hint in diag.network_hints(facts)}


def test_bare_metal_gives_no_hints() -> None:
    facts = HostFacts(
        system="Linux",
        kernel_release="6.8.0-45-generic",
        interfaces=(LO, _iface("enp3s0", "3c:22:fb:12:34:56", "192.168.1.20/24")),
        default_gateways=("192.168.1.1",),
        nameservers=("192.168.1.1",),
        dmi={"sys_vendor": "LENOVO", "product_name": "20XW"},
        cpu_hypervisor=False,
    )
    assert diag.network_hints(facts) == []


def test_vmware_nat_guest() -> None:
    facts = HostFacts(
        interfaces=(LO, _iface("ens33", "00:0c:29:4f:8e:35", "192.168.122.128/24", driver="e1000")),
        default_gateways=("192.168.122.2",),
        dmi={"sys_vendor": "VMware, Inc.", "product_name": "VMware Virtual Platform"},
        cpu_hypervisor=True,
    )
    hints = _kinds(facts)
    assert set(hints) == {"vm.vmware"}
    hint = hints["vm.vmware"]
    assert hint.severity == "warning"
    assert "likely in NAT mode" in hint.title
    assert "answers this guest's keepalive probes" in hint.meaning
    assert "heartbeat" in hint.meaning
    evidence = " | ".join(hint.evidence)
    assert "00:0c:29:4f:8e:35" in evidence
    assert "VMware, Inc." in evidence
    assert "192.168.122.2" in evidence


def test_vmware_bridged_guest_is_not_called_nat() -> None:
    facts = HostFacts(
        interfaces=(LO, _iface("ens192", "00:50:56:9a:00:01", "10.1.4.7/24", driver="vmxnet3")),
        default_gateways=("10.1.4.1",),
    )
    hint = _kinds(facts)["vm.vmware"]
    assert hint.title == "VMware virtual machine"
    assert any("vmxnet3" in line for line in hint.evidence)


def test_virtualbox_nat_guest() -> None:
    facts = HostFacts(
        interfaces=(LO, _iface("enp0s3", "08:00:27:a1:b2:c3", "10.0.2.15/24")),
        default_gateways=("10.0.2.2",),
        nameservers=("10.0.2.3",),
        dmi={"sys_vendor": "innotek GmbH", "product_name": "VirtualBox"},
    )
    hints = _kinds(facts)
    assert set(hints) == {"vm.virtualbox", "netstack.user-mode-nat"}
    nat = hints["netstack.user-mode-nat"]
    assert nat.title == "VirtualBox NAT"
    assert nat.severity == "warning"
    assert any("10.0.2.2" in line for line in nat.evidence)
    assert any("10.0.2.3" in line for line in nat.evidence)
    assert [h.kind for h in diag.network_hints(facts)] == [
        "netstack.user-mode-nat",
        "vm.virtualbox",
    ]
    assert all(h.severity == "warning" for h in diag.network_hints(facts))


def test_qemu_user_networking_guest() -> None:
    facts = HostFacts(
        interfaces=(LO, _iface("ens3", "52:54:00:12:34:56", "10.0.2.15/24", driver="virtio_net")),
        default_gateways=("10.0.2.2",),
        dmi={"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)"},
        cpu_hypervisor=True,
    )
    hints = _kinds(facts)
    assert set(hints) == {"vm.qemu-kvm", "netstack.user-mode-nat"}
    assert hints["netstack.user-mode-nat"].title == "QEMU user-mode networking (slirp)"
    assert hints["vm.qemu-kvm"].severity == "info"
    assert [h.kind for h in diag.network_hints(facts)] == ["netstack.user-mode-nat", "vm.qemu-kvm"]


def test_qemu_guest_on_a_bridge_has_no_user_mode_hint() -> None:
    facts = HostFacts(
        interfaces=(LO, _iface("ens3", "52:54:00:12:34:56", "192.168.122.50/24")),
        default_gateways=("192.168.122.1",),
    )
    assert set(_kinds(facts)) == {"vm.qemu-kvm"}


def test_slirp4netns_rootless_container() -> None:
    facts = HostFacts(
        interfaces=(LO, _iface("tap0", "a6:7d:e2:00:11:22", "10.0.2.100/24", is_tap=True)),
        default_gateways=("10.0.2.2",),
        nameservers=("10.0.2.3",),
        marker_files=("/run/.containerenv",),
        pid1_container_env="podman",
    )
    hints = _kinds(facts)
    assert set(hints) == {"netstack.slirp4netns", "container.podman"}
    slirp = hints["netstack.slirp4netns"]
    assert slirp.severity == "warning"
    assert "tap0 is a TAP device" in slirp.evidence
    assert any("10.0.2.100" in line for line in slirp.evidence)


def test_pasta_rootless_container_is_an_honest_inference() -> None:
    facts = HostFacts(
        interfaces=(LO, _iface("eth0", "9a:55:9a:55:9a:55", "192.168.1.20/24", is_tap=True)),
        default_gateways=("192.168.1.1",),
        marker_files=("/run/.containerenv",),
    )
    hints = _kinds(facts)
    assert set(hints) == {"netstack.tap-in-container", "container.podman"}
    tap = hints["netstack.tap-in-container"]
    assert tap.severity == "warning"
    assert "not a certainty" in tap.meaning
    assert tap.evidence == ("eth0 is a TAP device",)


def test_docker_bridge_container() -> None:
    facts = HostFacts(
        interfaces=(LO, _iface("eth0", "02:42:ac:11:00:02", "172.17.0.2/16", is_tap=False)),
        default_gateways=("172.17.0.1",),
        marker_files=("/.dockerenv",),
        pid1_cgroup="0::/system.slice/docker-0123abcd.scope\n",
    )
    hints = _kinds(facts)
    assert set(hints) == {"container.docker"}
    docker = hints["container.docker"]
    assert docker.title == "Docker container"
    assert docker.severity == "info"
    assert len(docker.evidence) == 3


def test_dockerenv_alone_is_a_weak_sign() -> None:
    facts = HostFacts(interfaces=(LO,), marker_files=("/.dockerenv",))
    hint = _kinds(facts)["container.docker"]
    assert "by /.dockerenv alone" in hint.title
    assert "weak sign" in hint.meaning


def test_docker_desktop() -> None:
    facts = HostFacts(
        kernel_release="6.10.0-linuxkit",
        interfaces=(LO, _iface("eth0", "02:42:ac:11:00:03", "172.17.0.3/16")),
        marker_files=("/.dockerenv",),
    )
    hints = _kinds(facts)
    assert set(hints) == {"netstack.docker-desktop", "container.docker"}
    assert hints["netstack.docker-desktop"].severity == "warning"
    assert next(h.kind for h in diag.network_hints(facts)) == "netstack.docker-desktop"


def test_kubernetes_pod() -> None:
    facts = HostFacts(
        interfaces=(LO, _iface("eth0", "ae:31:0f:00:00:01", "10.244.1.7/24")),
        environment={"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
        pid1_cgroup="0::/kubepods/burstable/pod1234/abcd\n",
    )
    hint = _kinds(facts)["container.kubernetes"]
    assert "sidecar" in hint.meaning
    assert hint.evidence == (
        "KUBERNETES_SERVICE_HOST is set",
        "/proc/1/cgroup mentions 'kubepods'",
    )


def test_wsl2_and_wsl1() -> None:
    wsl2 = HostFacts(
        kernel_release="5.15.153.1-microsoft-standard-WSL2",
        interfaces=(LO, _iface("eth0", "00:15:5d:3a:4b:5c", "172.24.80.2/20")),
        environment={"WSL_DISTRO_NAME": "Ubuntu"},
    )
    hints = _kinds(wsl2)
    assert set(hints) == {"netstack.wsl2", "vm.hyperv"}
    assert "WSL_DISTRO_NAME is set" in hints["netstack.wsl2"].evidence
    wsl1 = HostFacts(kernel_release="4.4.0-19041-Microsoft", interfaces=(LO,))
    assert set(_kinds(wsl1)) == {"netstack.wsl1"}


def test_hyperv_by_dmi_and_cloud_hints() -> None:
    hyperv = HostFacts(
        dmi={"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine"}
    )
    assert set(_kinds(hyperv)) == {"vm.hyperv"}
    azure = HostFacts(
        dmi={
            "sys_vendor": "Microsoft Corporation",
            "product_name": "Virtual Machine",
            "chassis_asset_tag": "7783-7084-3265-9085-8269-3286-77",
        }
    )
    assert set(_kinds(azure)) == {"vm.hyperv", "cloud.azure"}
    aws = HostFacts(
        dmi={"sys_vendor": "Amazon EC2", "product_name": "m5.large"},
        interfaces=(LO, _iface("ens5", "0a:1b:2c:3d:4e:5f", "172.31.5.9/20", driver="ena")),
        cpu_hypervisor=True,
    )
    hints = _kinds(aws)
    assert set(hints) == {"cloud.aws"}
    assert "350 s" in hints["cloud.aws"].meaning
    assert len(hints["cloud.aws"].evidence) == 2
    gcp = HostFacts(dmi={"product_name": "Google Compute Engine"})
    assert set(_kinds(gcp)) == {"cloud.gcp"}


def test_unidentified_vm() -> None:
    by_flag = HostFacts(interfaces=(LO,), cpu_hypervisor=True)
    assert _kinds(by_flag)["vm.vm-other"].evidence == ("CPU flags include 'hypervisor'",)
    by_virtio = HostFacts(
        interfaces=(LO, _iface("eth0", "02:fc:00:00:00:01", "192.0.2.2/24", driver="virtio_net")),
        cpu_hypervisor=True,
    )
    assert _kinds(by_virtio)["vm.vm-other"].evidence == ("eth0 uses the virtio_net driver",)


def test_host_running_userspace_network_processes() -> None:
    facts = HostFacts(interfaces=(LO,), processes=("pasta", "slirp4netns"))
    hints = _kinds(facts)
    assert set(hints) == {"host.pasta", "host.slirp4netns"}
    assert all(h.severity == "info" for h in hints.values())
    assert "this machine's own connections are not affected" in hints["host.pasta"].meaning


# --- pasta (passt) and slirp4netns: what each really does with keepalive probes -------------
# Measured: through Debian's pasta (passt 0.0~git20230309) kernel keepalive idle 1, interval 1,
# count 2 ended a healthy idle connection after 3.1 s (probes unanswered); slirp4netns 1.2.0
# answered every probe. Debian's pasta re-executes itself as passt.avx2.

PASTA_UNANSWERED = "does not answer keepalive probes"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("pasta", "host.pasta"),
        ("pasta.avx2", "host.pasta"),
        ("passt", "host.passt"),
        ("passt.avx2", "host.passt"),
    ],
)
def test_every_name_pasta_runs_under_is_recognised(name: str, kind: str) -> None:
    hints = _kinds(HostFacts(interfaces=(LO,), processes=(name,)))
    assert set(hints) == {kind}
    hint = hints[kind]
    assert hint.evidence == (f"process {name!r} is running",)
    assert PASTA_UNANSWERED in hint.meaning
    assert "0.0~git20230309" in hint.meaning
    assert "ends healthy connections" in hint.meaning
    assert "heartbeat" in hint.meaning
    assert "answers their keepalive probes" not in hint.meaning


def test_slirp4netns_host_hint_says_it_answers_every_probe() -> None:
    meaning = _kinds(HostFacts(processes=("slirp4netns",)))["host.slirp4netns"].meaning
    assert "answers every keepalive probe" in meaning
    assert "1.2.0" in meaning
    assert PASTA_UNANSWERED not in meaning


@pytest.mark.parametrize(
    ("name", "argv0", "expected"),
    [
        ("passt.avx2", "pasta", "pasta"),  # Debian's pasta: re-executed as passt.avx2
        ("passt.avx2", "/usr/bin/pasta", "pasta"),
        ("passt.avx2", "/usr/bin/passt", "passt.avx2"),  # QEMU's passt
        ("passt.avx2", None, "passt.avx2"),  # command line unreadable
        ("pasta.avx2", "pasta", "pasta"),  # newer passt: argv[0] stripped of .avx2
        ("pasta.avx2", None, "pasta"),
        ("passt", "pasta.avx2", "pasta"),
        ("pasta", None, "pasta"),
        ("slirp4netns", "slirp4netns", "slirp4netns"),
        ("bash", "pasta", None),
    ],
)
def test_netstack_process_name_sees_pasta_behind_its_avx2_name(
    name: str, argv0: str | None, expected: str | None
) -> None:
    assert diag.netstack_process_name(name, argv0) == expected


class _FakeProcess:
    def __init__(self, name: str, cmdline: list[str] | None) -> None:
        self.info = {"name": name}
        self._cmdline = cmdline

    def cmdline(self) -> list[str]:
        if self._cmdline is None:
            import psutil

            raise psutil.AccessDenied(pid=1)
        return self._cmdline


def test_running_processes_report_debians_pasta_as_pasta(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    processes = [
        _FakeProcess("bash", ["bash"]),
        _FakeProcess("passt.avx2", ["pasta", "--config-net", "--dns-forward", "169.254.1.1"]),
        _FakeProcess("passt.avx2", ["/usr/bin/passt", "--vhost-user"]),
        _FakeProcess("pasta.avx2", None),
        _FakeProcess("slirp4netns", ["slirp4netns", "--configure"]),
    ]

    def process_iter(attrs: list[str]) -> Iterator[_FakeProcess]:
        assert "name" in attrs
        return iter(processes)

    monkeypatch.setattr(psutil, "process_iter", process_iter)
    found = host_facts._running_netstack_processes()
    assert found == ("passt.avx2", "pasta", "slirp4netns")
    hints = _kinds(HostFacts(processes=found))
    assert set(hints) == {"host.pasta", "host.passt", "host.slirp4netns"}


def test_pasta_container_recognised_by_its_dns_forwarder_and_tap() -> None:
    facts = HostFacts(
        interfaces=(LO, _iface("eth0", "4e:1f:77:00:00:01", "192.168.1.20/24", is_tap=True)),
        default_gateways=("192.168.1.1",),  # pasta copies the host's routes: no sign there
        nameservers=("169.254.1.1",),
        marker_files=("/run/.containerenv",),
    )
    hints = _kinds(facts)
    assert set(hints) == {"netstack.pasta", "container.podman"}
    pasta = hints["netstack.pasta"]
    assert pasta.severity == "warning"
    assert pasta.evidence == (
        "nameserver 169.254.1.1 (Podman's pasta --dns-forward address)",
        "eth0 is a TAP device",
    )
    assert PASTA_UNANSWERED in pasta.meaning
    assert "ends healthy connections" in pasta.meaning
    assert "heartbeat" in pasta.meaning
    # A standalone pasta namespace (no container markers) with the same forwarder.
    standalone = HostFacts(interfaces=facts.interfaces, nameservers=("169.254.1.1",))
    assert set(_kinds(standalone)) == {"netstack.pasta"}


def test_link_local_nameserver_alone_is_not_called_pasta() -> None:
    facts = HostFacts(
        interfaces=(LO, _iface("enp3s0", "3c:22:fb:12:34:56", "192.168.1.20/24", is_tap=False)),
        nameservers=("169.254.1.1",),
    )
    assert "netstack.pasta" not in _kinds(facts)


def test_no_hint_claims_pasta_answers_probes() -> None:
    podman = _kinds(HostFacts(marker_files=("/run/.containerenv",)))["container.podman"]
    assert "slirp4netns answers them itself" in podman.meaning
    assert "pasta (passt 0.0~git20230309) leaves them unanswered" in podman.meaning
    docker = _kinds(HostFacts(marker_files=("/.dockerenv",)))["container.docker"]
    assert "slirp4netns/pasta" not in docker.meaning
    assert "leaves them unanswered" in docker.meaning
    tap = _kinds(
        HostFacts(
            interfaces=(LO, _iface("eth0", None, "10.88.0.2/16", is_tap=True)),
            marker_files=("/run/.containerenv",),
        )
    )["netstack.tap-in-container"]
    assert "answers keepalive probes itself" not in tap.meaning
    assert "leaves them unanswered" in tap.meaning
    slirp4netns = HostFacts(interfaces=(LO, _iface("tap0", None, "10.0.2.100/24", is_tap=True)))
    slirp = _kinds(slirp4netns)["netstack.slirp4netns"]
    assert "answers every keepalive probe" in slirp.meaning


def test_host_facts_json_round_trip() -> None:
    facts = HostFacts(
        system="Linux",
        kernel_release="6.1.0",
        interfaces=(
            _iface("tap0", "a6:7d:e2:00:11:22", "10.0.2.100/24", driver=None, is_tap=True),
        ),
        default_gateways=("10.0.2.2",),
        nameservers=("10.0.2.3",),
        marker_files=("/run/.containerenv",),
        environment={"container": "podman"},
        dmi={"sys_vendor": "QEMU"},
        processes=("pasta",),
        cpu_hypervisor=None,
        unreadable=("/proc/1/environ: Permission denied",),
    )
    encoded = json.loads(json.dumps(facts.to_json()))
    assert HostFacts.from_json(encoded) == facts
    assert diag.network_hints(HostFacts.from_json(encoded)) == diag.network_hints(facts)
    hint_json = diag.network_hints(facts)[0].to_json()
    assert set(hint_json) == {"kind", "title", "meaning", "evidence", "severity"}
    with pytest.raises(TypeError):
        HostFacts.from_json({"interfaces": "eth0"})


# --- pure parsers for routes and resolvers -------------------------------------------------------


def test_resolver_parser() -> None:
    resolv = "# comment\nsearch example\nnameserver 10.0.2.3\nnameserver fd00::3\noptions x\n"
    assert diag.parse_resolv_conf(resolv) == ("10.0.2.3", "fd00::3")


# --- middlebox idle timeouts ---------------------------------------------------------------------


def test_default_idle_of_two_hours_warns_for_every_short_middlebox() -> None:
    warnings = diag.idle_warnings(7200)
    names = [w.middlebox.name for w in warnings]
    assert names == [m.name for m in MIDDLEBOX_IDLE_TIMEOUTS if m.idle_timeout_seconds <= 7200]
    assert "Linux conntrack (established)" not in names
    timeouts = [w.middlebox.idle_timeout_seconds for w in warnings]
    assert timeouts == sorted(timeouts)
    nat = next(w for w in warnings if w.middlebox.name == "AWS NAT Gateway")
    assert nat.remedy == "keepalive"
    assert nat.suggestion.code == "KeepaliveConfig(idle=60, interval=10, count=5, user_timeout=110)"
    assert "350 s" in nat.message
    assert nat.suggestion.code in nat.message
    alb = warnings[0]
    assert alb.middlebox.name == "AWS Application Load Balancer"
    assert alb.remedy == "heartbeat"
    assert "keepalive.heartbeat" in alb.message


def test_idle_warning_boundaries() -> None:
    assert diag.idle_warnings(59) == []
    assert [w.middlebox.idle_timeout_seconds for w in diag.idle_warnings(60)] == [60, 60]
    assert {w.middlebox.name for w in diag.idle_warnings(300)} == {
        "AWS Application Load Balancer",
        "AWS Classic Load Balancer",
        "Azure Load Balancer / Azure NAT Gateway",
        "Home router / carrier-grade NAT (common low end)",
    }
    custom = diag.MiddleboxTimeout("my firewall", 90, "no", True, "ops wiki")
    (warning,) = diag.idle_warnings(120, middleboxes=[custom])
    assert (
        warning.suggestion.code == "KeepaliveConfig(idle=45, interval=10, count=5, user_timeout=95)"
    )
    assert set(warning.to_json()) == {
        "middlebox",
        "system_idle_seconds",
        "remedy",
        "message",
        "suggestion",
    }
    json.dumps(warning.to_json())


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf])
def test_idle_warnings_rejects_bad_numbers(bad: float) -> None:
    with pytest.raises(InvalidSetting, match="system_idle_seconds"):
        diag.idle_warnings(bad)


@pytest.mark.parametrize("bad", ["7200", True, None])
def test_idle_warnings_rejects_bad_types(bad: object) -> None:
    with pytest.raises(InvalidSettingType, match="system_idle_seconds"):
        diag.idle_warnings(bad)  # type: ignore[arg-type]


def test_suggestions() -> None:
    assert diag.suggest_keepalive(350).code == (
        "KeepaliveConfig(idle=60, interval=10, count=5, user_timeout=110)"
    )
    assert diag.suggest_keepalive(60).code == (
        "KeepaliveConfig(idle=30, interval=10, count=5, user_timeout=80)"
    )
    small = diag.suggest_keepalive(1)
    assert (small.idle, small.interval, small.user_timeout) == (0.5, 0.5, 3.0)
    assert small.code == "KeepaliveConfig(idle=0.5, interval=0.5, count=5, user_timeout=3)"
    assert DEFAULT_RISK_SECONDS == 240


@given(st.floats(min_value=0.001, max_value=1e7, allow_nan=False))
def test_suggestion_always_probes_before_the_middlebox_forgets(timeout: float) -> None:
    suggestion = diag.suggest_keepalive(timeout)
    assert 0 < suggestion.idle < timeout
    assert 0 < suggestion.interval <= suggestion.idle
    assert suggestion.user_timeout == suggestion.idle + suggestion.interval * suggestion.count
    assert suggestion.idle <= 60


def test_middlebox_table_is_sourced_and_sorted() -> None:
    timeouts = [m.idle_timeout_seconds for m in MIDDLEBOX_IDLE_TIMEOUTS]
    assert timeouts == sorted(timeouts)
    assert all(m.source and m.adjustable for m in MIDDLEBOX_IDLE_TIMEOUTS)
    by_name = {m.name: m for m in MIDDLEBOX_IDLE_TIMEOUTS}
    assert by_name["AWS Network Load Balancer (TCP listener)"].idle_timeout_seconds == 350
    assert by_name["Google Cloud NAT (established TCP)"].idle_timeout_seconds == 1200
    assert by_name["Azure Load Balancer / Azure NAT Gateway"].idle_timeout_seconds == 240


# --- real audits of a child process ------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, socket, sys
    listener = socket.create_server(("127.0.0.1", 0))
    def pair(server):
        client = socket.create_connection(server.getsockname()[:2])
        accepted, _ = server.accept()
        return client, accepted
    with_keepalive, accepted_a = pair(listener)
    with_keepalive.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    with_keepalive.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    plain, accepted_b = pair(listener)
    stuck, sink = pair(listener)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    stuck.setblocking(False)
    try:
        while True:
            stuck.send(b"x" * 65536)
    except BlockingIOError:
        pass
    ports = {
        "listener": listener.getsockname()[1],
        "keepalive": with_keepalive.getsockname()[1],
        "plain": plain.getsockname()[1],
        "stuck": stuck.getsockname()[1],
    }
    try:
        listener6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        client6, accepted6 = pair(listener6)
        client6.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        ports["keepalive6"] = client6.getsockname()[1]
    except OSError:
        pass
    print(json.dumps(ports), flush=True)
    sys.stdin.read()
    """
)


class Child:
    def __init__(self, command: list[str]) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(5)
            raise RuntimeError(f"child exited with {self.process.returncode}")
        self.ports: dict[str, int] = json.loads(line)
        self.pid = self.process.pid

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(5)


@pytest.fixture
def child() -> Iterator[Child]:
    running = Child([sys.executable, "-c", CHILD])
    try:
        yield running
    finally:
        running.close()


def _by_local_port(reports: list[ConnectionReport]) -> dict[int, ConnectionReport]:
    return {report.local_port: report for report in reports}


@needs_linux
@pytest.mark.parametrize("source", ["auto", "sock_diag", "proc"])
def test_audit_reports_each_keepalive_state_of_a_child(child: Child, source: str) -> None:
    time.sleep(0.3)
    reports = diag.audit_connections([child.pid], source=source)  # type: ignore[arg-type]
    elapsed = time.monotonic() - child.started
    assert {report.pid for report in reports} == {child.pid}
    assert all(report.process_name and "python" in report.process_name for report in reports)
    by_port = _by_local_port(reports)
    listener = child.ports["listener"]
    assert listener not in {r.local_port for r in reports if r.state == "LISTEN"}

    on = by_port[child.ports["keepalive"]]
    assert (on.keepalive, on.state, on.remote_port) == ("on", "ESTABLISHED", listener)
    assert on.keepalive_timer_seconds is not None
    assert 30 - elapsed - 0.1 <= on.keepalive_timer_seconds <= 30.0
    assert on.fd is not None
    assert on.fd >= 3
    assert on.inode

    off = by_port[child.ports["plain"]]
    assert (off.keepalive, off.keepalive_timer_seconds) == ("off", None)

    stuck = by_port[child.ports["stuck"]]
    assert stuck.keepalive == "unknown"
    assert stuck.kernel_timer in ("retransmit", "zero-window-probe")
    assert [flag.code for flag in stuck.flags] == ["keepalive-unknown-timer"]

    accepted = [r for r in reports if r.local_port == listener]
    assert len(accepted) == 3
    assert all(r.keepalive == "off" for r in accepted)

    if "keepalive6" in child.ports:
        on6 = by_port[child.ports["keepalive6"]]
        assert (on6.family, on6.local_address, on6.keepalive) == ("ipv6", "::1", "on")
        assert on6.keepalive_timer_seconds is not None
        assert on6.keepalive_timer_seconds > 7000
        assert [flag.code for flag in on6.flags] == ["keepalive-probe-late"]

    expected_source = "proc" if source == "proc" else "sock_diag"
    assert {report.source for report in reports} == {expected_source}
    if expected_source == "sock_diag":
        assert on.min_age_seconds is not None
        assert on.idle_seconds is not None
        assert 0.25 <= on.min_age_seconds <= elapsed + 0.05
        assert on.idle_seconds <= on.min_age_seconds
        assert off.flags == ()  # young, so no middlebox could have forgotten it yet
    else:
        assert on.min_age_seconds is None
        assert off.min_age_seconds is None
        assert [flag.code for flag in off.flags] == ["no-keepalive-age-unknown"]


@needs_linux
def test_audit_includes_listeners_on_request(child: Child) -> None:
    reports = diag.audit_connections([child.pid], include_listening=True)
    listening = [r for r in reports if r.state == "LISTEN"]
    assert child.ports["listener"] in {r.local_port for r in listening}
    assert all(r.keepalive == "unknown" and r.flags == () for r in listening)


@needs_linux
def test_audit_of_every_process_finds_the_child(child: Child) -> None:
    result = diag.audit()
    mine = [r for r in result.connections if r.pid == child.pid]
    assert {r.local_port for r in mine} >= {child.ports["keepalive"], child.ports["plain"]}
    assert _by_local_port(mine)[child.ports["keepalive"]].keepalive == "on"
    json.dumps(result.to_json())


def test_psutil_audit_is_honest_about_keepalive(child: Child) -> None:
    result = diag.audit([child.pid], source="psutil")
    by_port = _by_local_port(list(result.connections))
    report = by_port[child.ports["keepalive"]]
    assert (report.pid, report.keepalive, report.source) == (child.pid, "unknown", "psutil")
    assert report.remote_port == child.ports["listener"]
    assert [flag.code for flag in report.flags] == ["keepalive-unknown-platform"]
    assert all(r.keepalive == "unknown" for r in result.connections)
    assert result.source == "psutil"
    assert result.notes


def test_connection_report_json_keys_are_stable(child: Child) -> None:
    (report, *_) = diag.audit_connections([child.pid])
    data = report.to_json()
    assert list(data) == [
        "pid",
        "process_name",
        "fd",
        "family",
        "local_address",
        "local_port",
        "remote_address",
        "remote_port",
        "local",
        "remote",
        "state",
        "keepalive",
        "keepalive_timer_seconds",
        "keepalive_probes_unanswered",
        "kernel_timer",
        "send_queue_bytes",
        "receive_queue_bytes",
        "idle_seconds",
        "min_age_seconds",
        "uid",
        "inode",
        "source",
        "flags",
    ]
    assert data["local"] == f"127.0.0.1:{report.local_port}"
    json.dumps(data)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_audit_of_a_missing_process_raises() -> None:
    pid = _dead_pid()
    with pytest.raises(ProcessLookupError, match=str(pid)):
        diag.audit_connections([pid])
    with pytest.raises(ProcessLookupError, match=str(pid)):
        diag.audit_connections([pid], source="psutil")


@pytest.mark.parametrize("bad", [[0], [-5], [True], [1.5], ["12"]])
def test_audit_rejects_bad_pids(bad: list[object]) -> None:
    with pytest.raises(InvalidSetting, match="pids"):
        diag.audit_connections(bad)  # type: ignore[arg-type]


def test_audit_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        diag.audit_connections("123")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source"):
        diag.audit_connections([os.getpid()], source="bogus")  # type: ignore[arg-type]
    with pytest.raises(InvalidSetting, match="risk_seconds"):
        diag.audit_connections([os.getpid()], risk_seconds=0)


@needs_linux
@pytest.mark.netns
def test_audit_reads_another_network_namespace_from_its_proc() -> None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    command = [str(unshare), "-n", "sh", "-c", f'{ip} link set lo up && exec "$0" -c "$1"']
    if unshare is None or ip is None or os.geteuid() != 0:
        if os.environ.get("KEEPALIVE_REQUIRE_NETNS") == "1":
            pytest.fail("network namespaces required (KEEPALIVE_REQUIRE_NETNS=1)")
        pytest.skip("needs root, unshare(1) and ip(8)")
    try:
        running = Child([*command, sys.executable, CHILD])
    except RuntimeError as error:
        if os.environ.get("KEEPALIVE_REQUIRE_NETNS") == "1":
            raise
        pytest.skip(f"cannot create a network namespace here: {error}")
    try:
        result = diag.audit([running.pid])
        by_port = _by_local_port(list(result.connections))
        assert by_port[running.ports["keepalive"]].keepalive == "on"
        assert by_port[running.ports["plain"]].keepalive == "off"
        assert by_port[running.ports["keepalive"]].source == "proc"
        assert any(f"/proc/{running.pid}/net/tcp" in note for note in result.notes)
        assert result.source == "proc"
    finally:
        running.close()


# --- the collector and import hygiene ------------------------------------------------------------


def test_collect_host_facts_on_this_machine() -> None:
    facts = diag.collect_host_facts()
    assert facts.system == platform.system()
    assert facts.kernel_release == platform.release()
    loopback = [i for i in facts.interfaces if "127.0.0.1" in i.ips()]
    assert loopback
    assert loopback[0].addresses[0] == "127.0.0.1/8"
    round_trip = HostFacts.from_json(json.loads(json.dumps(facts.to_json())))
    assert round_trip == facts
    for hint in diag.network_hints(facts):
        assert hint.evidence
        assert hint.severity in ("info", "warning")


def test_importing_diagnostics_does_not_import_psutil() -> None:
    code = (
        "import sys, keepalive.diagnostics as d; "
        "assert 'psutil' not in sys.modules, 'psutil imported eagerly'; "
        "d.network_hints(d.HostFacts()); d.idle_warnings(7200); "
        "assert 'psutil' not in sys.modules, 'pure functions imported psutil'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_the_package_exports_what_its_public_modules_export() -> None:
    from keepalive.diagnostics import connections, facts, hints, middleboxes

    exported = {
        name for module in (connections, facts, hints, middleboxes) for name in module.__all__
    }
    assert set(diag.__all__) == exported
    assert all(getattr(diag, name) is not None for name in diag.__all__)
    assert not [name for name in diag.__all__ if name.startswith("_")]
