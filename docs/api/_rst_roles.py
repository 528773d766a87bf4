"""A griffe extension for the API reference: Sphinx roles in docstrings become inline code,
and a class's machinery (``__slots__``, ``__repr__``, ...) is left out.

The docstrings use reStructuredText cross-reference roles (``:func:`configure```,
``:class:`~keepalive.UnsupportedOption```), which mkdocstrings would show verbatim. Each
becomes the name as inline code (``configure``, ``UnsupportedOption``: a ``~`` keeps the last
component, as Sphinx does; ``title <target>`` keeps the title). Loaded by mkdocs.yml
(``extensions`` of the python handler); not a page of the site (``exclude_docs``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

#: Special members that say nothing to a user of the class (``__enter__``, ``__iter__`` and
#: the like stay: they are how a class is used).
MACHINERY = frozenset(
    {
        "__slots__",
        "__match_args__",
        "__post_init__",
        "__repr__",
        "__hash__",
        "__eq__",
        "__init_subclass__",
        "__weakref__",
        "__dict__",
        "__annotations__",
    }
)
_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj|const|term):`([^`]+)`")


def _as_code(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    titled = re.fullmatch(r"(.+?)\s*<([^>]+)>", target)
    if titled:
        return f"`{titled.group(1)}`"
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


def plain_roles(text: str) -> str:
    """``text`` with every Sphinx cross-reference role replaced by inline code."""
    return _ROLE.sub(_as_code, text)


class RstRoles(griffe.Extension):
    """Rewrites the docstring of every object griffe loads; drops a class's machinery."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        del kwargs
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        del kwargs
        for name in MACHINERY.intersection(cls.members):
            cls.del_member(name)
