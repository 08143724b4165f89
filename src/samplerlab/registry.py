"""Name -> object registries used at the configuration / CLI boundary.

Strings are resolved once, here, with an error that lists the valid choices;
code below this boundary passes objects, never names.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def parse_value(text: str):
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str, kind: str = "solver", example: str = "unipc:order=3") -> tuple[str, dict]:
    """'dpm-solver++:order=3:multistep=false' -> ('dpm-solver++', {'order': 3, 'multistep': False}): the spec
    strings of solvers and grids (``flow:shift=3``) at the configuration / CLI boundary."""
    name, *parts = spec.split(":")
    params = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"bad {kind} spec {spec!r}: write NAME:KEY=VALUE:KEY=VALUE, e.g. {example!r}")
        params[key.strip().replace("-", "_")] = parse_value(value.strip())
    return name.strip(), params


class UnknownNameError(ValueError):
    """A name that is not in a registry; the message lists the valid names."""


class Registry(Generic[T]):
    """Names to objects. ``entry_points``: a group of installed package entry points whose modules register
    more entries when imported (how an upper layer, or another package, adds e.g. a network); they are loaded
    the first time a name is missing or the names are listed."""

    def __init__(self, kind: str, entry_points: str | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._group = entry_points

    def _load_plugins(self) -> None:
        if self._group is None:
            return
        group, self._group = self._group, None
        from importlib.metadata import entry_points

        for ep in entry_points(group=group):
            if ep.name.lower() not in self._items:
                ep.load()

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            key = name.lower()
            if key in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name.lower() not in self._items:
            self._load_plugins()
        try:
            return self._items[name.lower()]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        self._load_plugins()
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        if name.lower() not in self._items:
            self._load_plugins()
        return name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
