"""Shared pytest configuration.

The fault proxy and echo server fixtures come from keepalive's own pytest plugin (registered
as a ``pytest11`` entry point when the package is installed); the network-namespace fixture
from tests/netns.py; the event loop parameter of the asyncio tests (asyncio, uvloop) from
tests/loops.py.
"""

pytest_plugins = ["netns", "loops"]
