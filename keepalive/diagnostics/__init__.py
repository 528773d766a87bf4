"""Diagnostics: what this host's network path means for keepalive, which TCP connections run
without it, and whether a given peer answers.

One module per part; the rules are pure functions over plain data, and thin collectors read
local state (nothing here sends traffic, except the check probe, to the peer it is given):

* :mod:`~keepalive.diagnostics.facts`: local facts about the host that tell its network path
  (:func:`collect_host_facts`); :mod:`~keepalive.diagnostics.hints`: what they mean for
  keepalive (:func:`network_hints`: virtual machines, containers, userspace network stacks).
* :mod:`~keepalive.diagnostics.middleboxes`: common middleboxes' idle timeouts
  (:data:`MIDDLEBOX_IDLE_TIMEOUTS`), :func:`idle_warnings` and :func:`suggest_keepalive`.
* :mod:`~keepalive.diagnostics.connections`: the audit of processes' TCP connections and
  their keepalive state (:func:`audit`), on Linux read from the kernel.
* :mod:`keepalive.diagnostics.check`: the ``keepalive check`` probe (connect, configure, read
  back, watch or run the heartbeat), which reports its stages to a callback. Import it from
  there: it is not loaded with this package.

The Linux kernel's formats (``/proc/net/tcp``, NETLINK_SOCK_DIAG, ``struct tcp_info``, the
routing tables) are parsed in one private module, ``_linux``. psutil is imported only by the
functions that need it, never at import.
"""

from __future__ import annotations

from keepalive.diagnostics.connections import (
    AuditResult,
    AuditSource,
    ConnectionFlag,
    ConnectionReport,
    ObservedKeepalive,
    SkippedProcess,
    assess_connection,
    audit,
    audit_connections,
    infer_keepalive,
)
from keepalive.diagnostics.facts import (
    CONTAINER_MARKER_FILES,
    DMI_KEYS,
    NETSTACK_PROCESS_NAMES,
    PASST_FAMILY,
    HostFacts,
    InterfaceFacts,
    collect_host_facts,
    netstack_process_name,
    normalize_mac,
    parse_resolv_conf,
)
from keepalive.diagnostics.hints import (
    VIRTUAL_NIC_PREFIXES,
    NetworkHint,
    Severity,
    VirtualNic,
    match_virtual_mac,
    network_hints,
)
from keepalive.diagnostics.middleboxes import (
    DEFAULT_RISK_SECONDS,
    MIDDLEBOX_IDLE_TIMEOUTS,
    IdleWarning,
    KeepaliveSuggestion,
    MiddleboxTimeout,
    Remedy,
    idle_warnings,
    suggest_keepalive,
)

__all__ = [
    "CONTAINER_MARKER_FILES",
    "DEFAULT_RISK_SECONDS",
    "DMI_KEYS",
    "MIDDLEBOX_IDLE_TIMEOUTS",
    "NETSTACK_PROCESS_NAMES",
    "PASST_FAMILY",
    "VIRTUAL_NIC_PREFIXES",
    "AuditResult",
    "AuditSource",
    "ConnectionFlag",
    "ConnectionReport",
    "HostFacts",
    "IdleWarning",
    "InterfaceFacts",
    "KeepaliveSuggestion",
    "MiddleboxTimeout",
    "NetworkHint",
    "ObservedKeepalive",
    "Remedy",
    "Severity",
    "SkippedProcess",
    "VirtualNic",
    "assess_connection",
    "audit",
    "audit_connections",
    "collect_host_facts",
    "idle_warnings",
    "infer_keepalive",
    "match_virtual_mac",
    "netstack_process_name",
    "network_hints",
    "normalize_mac",
    "parse_resolv_conf",
    "suggest_keepalive",
]
