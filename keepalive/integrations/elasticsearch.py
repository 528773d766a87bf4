"""Kernel keepalive (and the user timeout) on elasticsearch-py's connections (8.x and 9.x).

The official client sends every request through elastic-transport, which opens one connection
pool per node from the class given as ``node_class``. :func:`node_class` returns a subclass of
elastic-transport's ``Urllib3HttpNode`` (the default) or ``RequestsHttpNode`` whose pool hands
:func:`keepalive.integrations.urllib3_socket_options` to every connection it opens::

    Elasticsearch(hosts, node_class=node_class(cfg))

Everything else the node does is untouched: TLS (``https://`` hosts, ``ca_certs``,
``ssl_assert_fingerprint``), ``http_compress``, ``connections_per_node``, timeouts, sniffing
(sniffed nodes are built from the same class). The asynchronous client (``AsyncElasticsearch``,
aiohttp and httpx nodes) is not covered.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any, Literal

from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSettingType
from keepalive.integrations import urllib3_socket_options

__all__ = ["node_class"]

HttpClient = Literal["urllib3", "requests"]
_BASES: dict[str, str] = {"urllib3": "Urllib3HttpNode", "requests": "RequestsHttpNode"}


def node_class(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    http_client: HttpClient = "urllib3",
) -> type:
    """An elastic-transport node class whose connections carry keepalive (and TCP_NODELAY).

    For ``Elasticsearch(hosts, node_class=node_class(cfg))`` (or elastic-transport's
    ``Transport(node_configs, node_class=...)``). ``http_client`` picks the base:
    ``"urllib3"`` (``Urllib3HttpNode``, the client's default) or ``"requests"``
    (``RequestsHttpNode``; its connections through a proxy get the options too). The options
    are computed now, so a bad or (with ``strict=True``) unsupported setting raises here, as
    :func:`~keepalive.integrations.urllib3_socket_options` does. The same arguments return
    the same class.
    """
    if not isinstance(http_client, str) or http_client not in _BASES:
        raise InvalidSettingType("http_client", http_client, "'urllib3' or 'requests'")
    _base(http_client)  # a missing elastic-transport is named as such, not as urllib3
    options = tuple(urllib3_socket_options(cfg, strict=strict))
    return _node_class(options, http_client)


def _base(http_client: str) -> Any:
    # By name: the class comes from an optional dependency.
    try:
        transport = importlib.import_module("elastic_transport")
    except ImportError as exc:
        raise ImportError(
            "keepalive.integrations.elasticsearch.node_class() needs elastic-transport "
            "(installed with elasticsearch>=8): pip install 'elasticsearch>=8'",
            name="elastic_transport",
        ) from exc
    return getattr(transport, _BASES[http_client])


@cache
def _node_class(options: tuple[tuple[int, int, int | bytes], ...], http_client: str) -> type:
    parent = _base(http_client)
    socket_options = list(options)

    if http_client == "urllib3":

        def __init__(self: Any, config: Any) -> None:
            parent.__init__(self, config)
            # The pool makes its connections lazily from conn_kw: nothing is open yet.
            self.pool.conn_kw["socket_options"] = socket_options

    else:

        def __init__(self: Any, config: Any) -> None:
            parent.__init__(self, config)
            adapter = self.session.get_adapter(self.base_url)
            # Pools are keyed by their options too: the pool preloaded above is left unused,
            # and the one made for the first request carries the options.
            adapter.poolmanager.connection_pool_kw["socket_options"] = socket_options
            proxy_manager_for = adapter.proxy_manager_for

            def with_options(proxy: str, **proxy_kwargs: Any) -> Any:
                proxy_kwargs.setdefault("socket_options", socket_options)
                return proxy_manager_for(proxy, **proxy_kwargs)

            adapter.proxy_manager_for = with_options

    name = f"Keepalive{parent.__name__}"
    return type(
        name,
        (parent,),
        {
            "__init__": __init__,
            "__module__": __name__,
            "__qualname__": name,
            "keepalive_socket_options": tuple(options),
        },
    )
