"""`Frozen`: the base of polycache's immutable records, built without `dataclasses`.

`import dataclasses` costs about a millisecond and each `@dataclass` class about half of one more,
on every cold start. A record subclasses `Frozen` and behaves as a `@dataclass(frozen=True,
slots=True)` class with the same fields does: same constructor, `repr`, equality, hash, pattern
matching, copying and pickling, and `dataclasses.FrozenInstanceError` on assignment.
"""

from typing import Any, ClassVar

__all__ = ["Frozen", "set_field"]

set_field = object.__setattr__
"""Sets a field in a record's `__init__` (the record's own `__setattr__` refuses)."""


class Frozen:
    """An immutable record whose fields are its `__match_args__`, in constructor order.

    A subclass declares `__slots__` and `__match_args__` (its fields), and an `__init__` taking
    them in that order that sets each with `set_field`. Two records are equal when they are of
    one class and their fields are equal; the hash is the fields' hash.
    """

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()

    def _fields(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self.__match_args__])

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __setattr__(self, name: str, value: object) -> None:
        from dataclasses import FrozenInstanceError  # only on this error path

        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return (type(self), self._fields())
