"""A small name -> factory registry with helpful errors (timm-style, no ``eval``)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Generic, Iterator, TypeVar

from . import plugins

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories.

    ``@REG.register("name")`` registers a factory in one line; ``REG.get(name)`` returns it or
    raises a ``ValueError`` that names the parameter, the value given and every valid name. A
    reference ``"path/file.py:Name"`` or ``"module:Name"`` names a factory outside the package
    (:mod:`ltbench.plugins`), loaded on first use; a name it does not know first runs the
    installed ``ltbench.plugins`` entry points, which may register it.
    """

    def __init__(self, kind: str, param: str = "name") -> None:
        self.kind = kind
        self.param = param
        self._items: Dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} registry: name must be a non-empty string, got {name!r}")

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = fn
            plugins.note_external(name, fn)
            return fn

        return deco

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._items and plugins.is_reference(name):
            factory = plugins.load(name)
            if not callable(factory):
                raise plugins.PluginError(f"{self.kind} {self.param}={name!r} is a {type(factory).__name__}, "
                                          f"not a class or function that builds a {self.kind}")
            return factory
        if name not in self._items:
            plugins.load_entry_points()
        if name not in self._items:
            raise ValueError(
                f"unknown {self.kind}: {self.param}={name!r}; valid {self.kind} names: "
                f"{', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        plugins.load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            plugins.load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
