"""Local facts about this host that tell its network path: interfaces (MACs, addresses,
drivers, TAP devices), container marker files, DMI strings, the kernel release, default
routes, resolvers, a few process names.

:func:`collect_host_facts` reads them into a :class:`HostFacts` (plain data that tests build by
hand, and that round-trips through JSON); :mod:`keepalive.diagnostics.hints` says what they
mean. Nothing here sends a packet anywhere. psutil is imported inside the collector, never at
module import.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import platform
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from keepalive.diagnostics._linux import parse_proc_net_ipv6_route, parse_proc_net_route

__all__ = [
    "CONTAINER_MARKER_FILES",
    "DMI_KEYS",
    "NETSTACK_PROCESS_NAMES",
    "PASST_FAMILY",
    "HostFacts",
    "InterfaceFacts",
    "collect_host_facts",
    "netstack_process_name",
    "normalize_mac",
    "parse_resolv_conf",
]


# Files whose existence marks a container. Source: systemd src/basic/virt.c
# (detect_container_files and detect_container), podman issue 6192, moby issue 18355.
CONTAINER_MARKER_FILES: tuple[str, ...] = (
    "/.dockerenv",
    "/run/.containerenv",
    "/run/host/container-manager",
    "/run/systemd/container",
)

# Processes that terminate TCP in userspace for VMs or containers when they run on this host.
# passt and pasta are one program (pasta is passt in namespace mode); on x86-64 it re-executes
# itself as "<its path>.avx2" when the CPU has AVX2 (passt arch.c), so Debian's pasta shows up
# as passt.avx2 (older releases append .avx2 to /proc/self/exe, the passt binary) or
# pasta.avx2 (newer ones append it to argv[0]).
NETSTACK_PROCESS_NAMES: Mapping[str, str] = {
    "slirp4netns": "slirp4netns (rootless containers' userspace TCP/IP stack)",
    "pasta": "pasta (rootless containers' userspace network, splices TCP to host sockets)",
    "pasta.avx2": "pasta (its AVX2 build; rootless containers' userspace network)",
    "passt": "passt (userspace network for QEMU guests; run as pasta for containers)",
    "passt.avx2": "passt or pasta (their AVX2 build, which Debian's pasta re-executes as)",
    "vpnkit": "vpnkit (Docker Desktop's userspace TCP/IP stack)",
    "com.docker.vpnkit": "vpnkit (Docker Desktop's userspace TCP/IP stack)",
    "gvproxy": "gvproxy (gvisor-tap-vsock: Podman machine / Lima userspace network)",
    "vmnet-natd": "vmnet-natd (VMware Fusion/Workstation NAT service)",
    "vmnat.exe": "vmnat (VMware Workstation NAT service)",
    "VBoxHeadless": "VirtualBox VM process (its NAT engine runs inside it)",
    "VirtualBoxVM": "VirtualBox VM process (its NAT engine runs inside it)",
}

#: The /sys/class/dmi/id files read (the hint rules look at them in this order).
DMI_KEYS: tuple[str, ...] = (
    "sys_vendor",
    "product_name",
    "product_version",
    "board_vendor",
    "bios_vendor",
    "chassis_asset_tag",
)

# Environment variables that mark an environment; collected from our own process.
_ENV_MARKERS: tuple[str, ...] = (
    "KUBERNETES_SERVICE_HOST",
    "container",
    "WSL_DISTRO_NAME",
    "WSL_INTEROP",
)

#: The names passt runs under: pasta is passt in namespace mode, and either may re-execute
#: as its ``.avx2`` build (see :data:`NETSTACK_PROCESS_NAMES`).
PASST_FAMILY: frozenset[str] = frozenset({"pasta", "pasta.avx2", "passt", "passt.avx2"})

# linux/if_tun.h
_IFF_TAP = 0x0002


def normalize_mac(mac: str) -> str | None:
    """``"00-50-56-AB-CD-EF"``, ``"0050.56ab.cdef"`` or ``"00:50:56:ab:cd:ef"`` ->
    ``"00:50:56:ab:cd:ef"``; None when it is not a 6-byte MAC."""
    digits = re.sub(r"[^0-9a-fA-F]", "", mac)
    if len(digits) != 12 or re.search(r"[^0-9a-fA-F:.\-\s]", mac):
        return None
    digits = digits.lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


@dataclass(frozen=True)
class InterfaceFacts:
    """One network interface as collected.

    JSON keys: ``name``, ``mac`` (normalized or null), ``addresses`` (list of ``"addr/prefix"``
    strings), ``driver`` (kernel driver or null), ``is_tap`` (true/false/null = unknown).
    """

    name: str
    mac: str | None = None
    addresses: tuple[str, ...] = ()
    driver: str | None = None
    is_tap: bool | None = None

    def ips(self) -> tuple[str, ...]:
        """The addresses without their prefix lengths."""
        return tuple(address.split("/", 1)[0] for address in self.addresses)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "mac": self.mac,
            "addresses": list(self.addresses),
            "driver": self.driver,
            "is_tap": self.is_tap,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> InterfaceFacts:
        return cls(
            name=str(data["name"]),
            mac=_opt_str(data.get("mac")),
            addresses=_str_tuple(data.get("addresses")),
            driver=_opt_str(data.get("driver")),
            is_tap=_opt_bool(data.get("is_tap")),
        )


@dataclass(frozen=True)
class HostFacts:
    """Local facts about this host that the hint rules read. Plain data: tests build it by hand.

    JSON keys (``to_json``/``from_json`` round-trip, so a user's facts can be replayed):
    ``system`` (``platform.system()``), ``kernel_release``, ``proc_version`` (or null),
    ``interfaces`` (list of :class:`InterfaceFacts` objects), ``default_gateways`` (IPv4 and
    IPv6 next hops of default routes), ``nameservers``, ``marker_files`` (the
    :data:`CONTAINER_MARKER_FILES` that exist), ``container_manager`` (content of
    /run/host/container-manager or /run/systemd/container), ``pid1_cgroup`` (text of
    /proc/1/cgroup), ``pid1_container_env`` (PID 1's ``container=`` value), ``environment``
    (the marker variables set in this process), ``dmi`` (DMI id strings by file name),
    ``processes`` (names from :data:`NETSTACK_PROCESS_NAMES` seen running; passt or its
    AVX2 build running as pasta is reported as ``"pasta"``, see :func:`netstack_process_name`),
    ``cpu_hypervisor`` (the ``hypervisor`` CPU flag; null = unknown), ``unreadable`` (what
    could not be read, with the reason).
    """

    system: str = ""
    kernel_release: str = ""
    proc_version: str | None = None
    interfaces: tuple[InterfaceFacts, ...] = ()
    default_gateways: tuple[str, ...] = ()
    nameservers: tuple[str, ...] = ()
    marker_files: tuple[str, ...] = ()
    container_manager: str | None = None
    pid1_cgroup: str | None = None
    pid1_container_env: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    dmi: Mapping[str, str] = field(default_factory=dict)
    processes: tuple[str, ...] = ()
    cpu_hypervisor: bool | None = None
    unreadable: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "system": self.system,
            "kernel_release": self.kernel_release,
            "proc_version": self.proc_version,
            "interfaces": [interface.to_json() for interface in self.interfaces],
            "default_gateways": list(self.default_gateways),
            "nameservers": list(self.nameservers),
            "marker_files": list(self.marker_files),
            "container_manager": self.container_manager,
            "pid1_cgroup": self.pid1_cgroup,
            "pid1_container_env": self.pid1_container_env,
            "environment": dict(self.environment),
            "dmi": dict(self.dmi),
            "processes": list(self.processes),
            "cpu_hypervisor": self.cpu_hypervisor,
            "unreadable": list(self.unreadable),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> HostFacts:
        interfaces = data.get("interfaces") or []
        if not isinstance(interfaces, list):
            raise TypeError("HostFacts.from_json: 'interfaces' must be a list")
        return cls(
            system=str(data.get("system", "")),
            kernel_release=str(data.get("kernel_release", "")),
            proc_version=_opt_str(data.get("proc_version")),
            interfaces=tuple(
                InterfaceFacts.from_json(cast("Mapping[str, object]", item)) for item in interfaces
            ),
            default_gateways=_str_tuple(data.get("default_gateways")),
            nameservers=_str_tuple(data.get("nameservers")),
            marker_files=_str_tuple(data.get("marker_files")),
            container_manager=_opt_str(data.get("container_manager")),
            pid1_cgroup=_opt_str(data.get("pid1_cgroup")),
            pid1_container_env=_opt_str(data.get("pid1_container_env")),
            environment=_str_map(data.get("environment")),
            dmi=_str_map(data.get("dmi")),
            processes=_str_tuple(data.get("processes")),
            cpu_hypervisor=_opt_bool(data.get("cpu_hypervisor")),
            unreadable=_str_tuple(data.get("unreadable")),
        )


def parse_resolv_conf(text: str) -> tuple[str, ...]:
    """The ``nameserver`` addresses of a resolv.conf."""
    servers: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
    return tuple(servers)


# --- the collector (I/O) -------------------------------------------------------------------------


def _read_text(path: str, unreadable: list[str], *, limit: int = 1 << 20) -> str | None:
    """The file's text, or None (missing files silently; other failures noted)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno not in (errno.ENOENT, errno.ENOTDIR):
            unreadable.append(f"{path}: {error.strerror or error}")
        return None


def _interface_facts(unreadable: list[str]) -> tuple[InterfaceFacts, ...]:
    import psutil  # noqa: PLC0415  (lazy: `import keepalive` must not import psutil)

    interfaces: list[InterfaceFacts] = []
    try:
        table = psutil.net_if_addrs()
    except OSError as error:
        unreadable.append(f"interfaces: {error}")
        return ()
    link_family = getattr(psutil, "AF_LINK", None)
    for name, entries in sorted(table.items()):
        mac: str | None = None
        addresses: list[str] = []
        for entry in entries:
            if entry.family == link_family:
                mac = normalize_mac(entry.address) or mac
            elif entry.family in (socket.AF_INET, socket.AF_INET6):
                address = entry.address.split("%", 1)[0]
                addresses.append(_with_prefix(address, entry.netmask))
        driver: str | None = None
        is_tap: bool | None = None
        sys_path = f"/sys/class/net/{name}"
        if os.path.isdir(sys_path):
            with contextlib.suppress(OSError):
                driver = os.path.basename(os.readlink(f"{sys_path}/device/driver"))
            flags = _read_text(f"{sys_path}/tun_flags", unreadable)
            if flags is None:
                is_tap = False
            else:
                with contextlib.suppress(ValueError):
                    is_tap = bool(int(flags.strip(), 16) & _IFF_TAP)
        if mac == "00:00:00:00:00:00":
            mac = None
        interfaces.append(InterfaceFacts(name, mac, tuple(addresses), driver, is_tap))
    return tuple(interfaces)


def _with_prefix(address: str, netmask: str | None) -> str:
    if not netmask:
        return address
    try:
        network = ipaddress.ip_network(f"{address}/{netmask}", strict=False)
    except ValueError:
        return address
    return f"{address}/{network.prefixlen}"


def netstack_process_name(name: str, argv0: str | None = None) -> str | None:
    """The :data:`NETSTACK_PROCESS_NAMES` key for a process called ``name`` whose command line
    starts with ``argv0``, or None.

    passt and pasta are one program that re-executes itself as ``passt.avx2`` or
    ``pasta.avx2``: Debian's pasta runs as ``passt.avx2`` with ``argv[0]`` still ``pasta``.
    Such a process is reported as ``"pasta"`` when its name or ``argv[0]`` says pasta mode.
    """
    if name not in NETSTACK_PROCESS_NAMES:
        return None
    if name in PASST_FAMILY:
        invoked = os.path.basename(argv0 or "").removesuffix(".avx2")
        if name.startswith("pasta") or invoked == "pasta":
            return "pasta"
    return name


def _running_netstack_processes() -> tuple[str, ...]:
    import psutil  # noqa: PLC0415

    names: set[str] = set()
    for process in psutil.process_iter(["name"]):
        name = process.info.get("name")
        if not isinstance(name, str) or name not in NETSTACK_PROCESS_NAMES:
            continue
        argv0: str | None = None
        if name in PASST_FAMILY:
            with contextlib.suppress(psutil.Error, OSError, IndexError):
                argv0 = process.cmdline()[0]
        found = netstack_process_name(name, argv0)
        if found is not None:
            names.add(found)
    return tuple(sorted(names))


def collect_host_facts() -> HostFacts:
    """Read this host's local facts for :func:`network_hints`. Never sends traffic.

    Reads interface data (psutil), ``/sys/class/net``, ``/sys/class/dmi/id``, marker files,
    ``/proc/1/cgroup``, ``/proc/1/environ`` (when permitted), ``/proc/net/route``,
    ``/proc/net/ipv6_route``, ``/etc/resolv.conf``, ``/proc/cpuinfo`` and process names. What
    does not exist is left empty; what exists but cannot be read is listed in ``unreadable``.
    """
    unreadable: list[str] = []
    proc_version = _read_text("/proc/version", unreadable)
    markers = tuple(path for path in CONTAINER_MARKER_FILES if os.path.exists(path))
    container_manager = None
    for path in ("/run/host/container-manager", "/run/systemd/container"):
        text = _read_text(path, unreadable)
        if text and text.strip():
            container_manager = text.strip()
            break
    pid1_container_env = None
    environ = _read_text("/proc/1/environ", unreadable)
    if environ:
        for entry in environ.split("\0"):
            if entry.startswith("container="):
                pid1_container_env = entry.partition("=")[2]
    dmi: dict[str, str] = {}
    for key in DMI_KEYS:
        text = _read_text(f"/sys/class/dmi/id/{key}", unreadable)
        if text is not None and text.strip():
            dmi[key] = text.strip()
    gateways: list[str] = []
    route = _read_text("/proc/net/route", unreadable)
    if route:
        gateways.extend(parse_proc_net_route(route))
    route6 = _read_text("/proc/net/ipv6_route", unreadable)
    if route6:
        gateways.extend(parse_proc_net_ipv6_route(route6))
    resolv = _read_text("/etc/resolv.conf", unreadable)
    cpuinfo = _read_text("/proc/cpuinfo", unreadable, limit=1 << 16)
    cpu_hypervisor = None
    if cpuinfo is not None:
        cpu_hypervisor = bool(re.search(r"^flags\s*:.*\bhypervisor\b", cpuinfo, re.MULTILINE))
    try:
        processes = _running_netstack_processes()
    except Exception as error:  # psutil raises its own types; never let a probe kill the doctor
        processes = ()
        unreadable.append(f"process list: {error}")
    return HostFacts(
        system=platform.system(),
        kernel_release=platform.release(),
        proc_version=proc_version.strip() if proc_version else None,
        interfaces=_interface_facts(unreadable),
        default_gateways=tuple(gateways),
        nameservers=parse_resolv_conf(resolv) if resolv else (),
        marker_files=markers,
        container_manager=container_manager,
        pid1_cgroup=_read_text("/proc/1/cgroup", unreadable),
        pid1_container_env=pid1_container_env,
        environment={k: os.environ[k] for k in _ENV_MARKERS if os.environ.get(k)},
        dmi=dmi,
        processes=processes,
        cpu_hypervisor=cpu_hypervisor,
        unreadable=tuple(unreadable),
    )


# --- small JSON helpers --------------------------------------------------------------------------


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_bool(value: object) -> bool | None:
    return None if value is None else bool(value)


def _str_tuple(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"expected a list of strings, got {type(value).__name__}")
    return tuple(str(item) for item in value)


def _str_map(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object of strings, got {type(value).__name__}")
    return {str(key): str(item) for key, item in value.items()}
