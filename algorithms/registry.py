"""A name -> function table whose lookups fail loudly with the names it knows."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Functions registered under names; one registry per axis, one signature per registry.

    >>> ACTS = Registry("activation")
    >>> @ACTS.register("double")
    ... def double(x): return 2 * x
    >>> ACTS["double"](3)
    6
    >>> ACTS["triple"]
    Traceback (most recent call last):
    ...
    KeyError: "unknown activation 'triple'; known: double"
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._table: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def add(fn: F) -> F:
            if name in self._table:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._table[name] = fn
            return fn

        return add

    def __getitem__(self, name: str) -> F:
        try:
            return self._table[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def names(self) -> list[str]:
        return sorted(self._table)
