"""What every helper of ``keepalive.integrations`` shares: argument checks and import errors.

A module of its own so that the package and its submodules (``httpx``, ``pika``, ``kombu``,
``kafka``) import it without importing each other.
"""

from __future__ import annotations

from typing import Any

from keepalive._validate import flag
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSettingType
from keepalive.platforms import Platform, current


def _config(cfg: object) -> KeepaliveConfig:
    if cfg is None:
        return KeepaliveConfig()
    if not isinstance(cfg, KeepaliveConfig):
        raise InvalidSettingType("cfg", cfg, "a keepalive.KeepaliveConfig or None (the defaults)")
    return cfg


def _platform(platform: object) -> Platform:
    if platform is None:
        return current()
    if not isinstance(platform, Platform):
        raise InvalidSettingType("platform", platform, "a keepalive.Platform or None")
    return platform


def _checked(cfg: object, strict: object) -> tuple[KeepaliveConfig, bool]:
    """The config and the strict flag, refused with a named error before anything else."""
    return _config(cfg), flag("strict", strict)


def _missing(package: str, helper: str, requirement: str = "") -> ImportError:
    wanted = requirement or package
    return ImportError(
        f"keepalive.integrations.{helper}() needs {wanted}: pip install '{wanted}'",
        name=package,
    )


def _too_old(
    package: str, version: str, helper: str, requirement: str, feature: str
) -> ImportError:
    return ImportError(
        f"keepalive.integrations.{helper}() needs {requirement} ({feature}); "
        f"{package} {version} is installed: pip install -U '{requirement}'",
        name=package,
    )


def _accepts(callable_: Any, parameter: str) -> bool:
    import inspect  # noqa: PLC0415 - only needed for the version check

    return parameter in inspect.signature(callable_).parameters
