"""`Record`: frozen value classes without importing :mod:`dataclasses`.

``import dataclasses`` pulls in inspect, ast, dis and tokenize (8 ms and more in a fresh
process) and compiles every class's methods when the class is defined, while
``import keepalive`` plus the first ``configure()`` must stay within a few milliseconds of
setting the options by hand. The kernel layer's value classes (the config, platform
descriptions, plans, results) derive from :class:`Record` instead and keep what
``@dataclass(frozen=True, slots=True)`` gave them: construction by position or keyword,
equality and hashing by field values (or by identity, for classes that ask for it), a
dataclass-style ``repr``, :class:`dataclasses.FrozenInstanceError` on assignment, pickling,
``copy.replace()`` (3.13+), and :func:`dataclasses.fields`, :func:`~dataclasses.replace`,
:func:`~dataclasses.asdict` and :func:`~dataclasses.is_dataclass`, whose field descriptions
are built (importing :mod:`dataclasses`) only when one of them first asks.

A subclass lists its own fields in ``__slots__``, its ``__init__`` parameters in order (all
fields but computed ones, base classes' first) in ``__match_args__``, and writes ``__init__``
(positional parameters, as the dataclass it replaces) setting every field through
``object.__setattr__``.
"""

from __future__ import annotations

from operator import attrgetter

TYPE_CHECKING = False  # typing stays unimported on the first-use path (mypy reads it as True)
if TYPE_CHECKING:
    from collections.abc import Callable
    from dataclasses import Field
    from typing import Any, ClassVar

    from typing_extensions import Self

__all__ = ["Record"]


class _DataclassAttribute:
    """``__dataclass_fields__`` / ``__dataclass_params__``, as a dataclass of the same fields
    would have them, built on first access (once per class)."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __get__(self, instance: object, owner: type[Record]) -> Any:
        shadow = owner.__dict__.get("_dataclass_shadow_")
        if shadow is None:
            shadow = _dataclass_shadow(owner)
            owner._dataclass_shadow_ = shadow  # on this class only: subclasses build their own
        return getattr(shadow, self.attribute)


def _dataclass_shadow(owner: type[Record]) -> type:
    """A real dataclass with ``owner``'s fields, types, defaults and parameters."""
    import dataclasses  # noqa: PLC0415 - only for introspection, never on the hot path
    import inspect  # noqa: PLC0415

    annotations: dict[str, Any] = {}
    for klass in reversed(owner.__mro__):
        annotations.update(inspect.get_annotations(klass))
    parameters = inspect.signature(owner).parameters
    specs: list[tuple[str, Any, Field[Any]]] = []
    for name in owner._fields_:
        parameter = parameters.get(name)
        if parameter is None:  # computed by __init__
            spec = dataclasses.field(init=False, repr=False)
        elif parameter.default is inspect.Parameter.empty:
            spec = dataclasses.field()
        else:
            spec = dataclasses.field(default=parameter.default)
        specs.append((name, annotations.get(name, "Any"), spec))
    return dataclasses.make_dataclass(
        owner.__name__, specs, eq=owner._compare_, frozen=True, slots=False
    )


def _frozen(message: str) -> Exception:
    from dataclasses import FrozenInstanceError  # noqa: PLC0415 - only when misused

    return FrozenInstanceError(message)


class Record:
    """Base of the frozen value classes of the kernel layer (see the module docstring)."""

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()

    #: Compare and hash by field values (False: by identity, as ``@dataclass(eq=False)``).
    _compare_: ClassVar[bool] = True
    #: Every field, base classes' first: the ``__init__`` parameters and computed fields.
    _fields_: ClassVar[tuple[str, ...]] = ()
    #: The values of the ``__init__`` parameters, as a tuple: what equality and hashing use
    #: (called on the class, so that it never binds).
    _key_: ClassVar[Callable[[Any], tuple[Any, ...]]]
    _dataclass_shadow_: ClassVar[type]

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]] = _DataclassAttribute(  # type: ignore[assignment]
        "__dataclass_fields__"
    )
    __dataclass_params__: ClassVar[Any] = _DataclassAttribute("__dataclass_params__")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = cls.__match_args__
        inherited = cls._fields_
        computed = sorted(
            name
            for name in cls.__dict__.get("__slots__", ())
            if name not in names and name != "__weakref__"
        )
        cls._fields_ = (
            *inherited,
            *(name for name in names if name not in inherited),
            *computed,
        )
        if len(names) == 1:
            single = attrgetter(names[0])
            cls._key_ = lambda record: (single(record),)
        else:
            cls._key_ = attrgetter(*names)
        if not cls._compare_:  # identity, in C: these are looked up in caches on every call
            cls.__eq__ = object.__eq__  # type: ignore[method-assign]
            cls.__hash__ = object.__hash__  # type: ignore[method-assign]

    if not TYPE_CHECKING:  # mypy would otherwise accept any attribute assignment

        def __setattr__(self, name: str, value: object) -> None:
            raise _frozen(f"cannot assign to field {name!r}")

        def __delattr__(self, name: str) -> None:
            raise _frozen(f"cannot delete field {name!r}")

    def __repr__(self) -> str:
        cls = type(self)
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in cls.__match_args__)
        return f"{cls.__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            key = type(self)._key_
            return bool(key(self) == key(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(type(self)._key_(self))

    def __replace__(self, /, **changes: Any) -> Self:
        """A copy with ``changes``, validated as a new instance (``copy.replace``)."""
        values = {name: getattr(self, name) for name in self.__match_args__}
        values.update(changes)
        factory: Any = type(self)
        return factory(**values)  # type: ignore[no-any-return]

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields_)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self._fields_, state, strict=True):
            object.__setattr__(self, name, value)
