"""Shared pytest configuration: our own pytest plugin's fixtures (fault proxy, echo server)."""

pytest_plugins = ["keepalive.pytest_plugin"]
