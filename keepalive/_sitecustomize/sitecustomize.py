"""Run by Python at start-up when this directory is on PYTHONPATH (``python -m keepalive run``
puts it there): installs keepalive from ``KEEPALIVE_INSTALL``, then runs the sitecustomize
this file hides (the interpreter's, a virtualenv's, the program's), if there is one.

A bad ``KEEPALIVE_INSTALL`` stops the interpreter with status 2 and a message before the
program starts. An interpreter that cannot import keepalive says so on stderr and runs the
program without it (a child process may run another Python than its parent).
"""

from __future__ import annotations

import os
import sys


def _activate() -> None:
    if os.environ.get("KEEPALIVE_INSTALL") is None:
        return
    try:
        from keepalive.installer import _startup  # noqa: PLC0415 - only when asked
    except ImportError as exc:
        sys.stderr.write(
            f"keepalive: KEEPALIVE_INSTALL is set, but {sys.executable} cannot import "
            f"keepalive ({exc}): this process runs without it\n"
        )
        return
    _startup()


def _chain() -> None:
    """Import the next sitecustomize on sys.path, as Python would have without this one."""
    here = os.path.normcase(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [
        entry for entry in sys.path if os.path.normcase(os.path.abspath(entry or ".")) != here
    ]
    ours = sys.modules.pop("sitecustomize", None)
    try:
        __import__("sitecustomize")  # the program's own, if any
    except ImportError as exc:
        if exc.name != "sitecustomize":
            raise  # its own import failed: site.py reports it as it always does
        if ours is not None:
            sys.modules["sitecustomize"] = ours


_activate()
_chain()
