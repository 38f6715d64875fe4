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

    def table(self) -> list[str]:
        """One line per name: the name, where it is defined (for a name registered from outside
        the package) and the first paragraph of its factory's docstring, cut at 100 characters."""
        rows = []
        for name in self.names():
            fn = self._items[name]
            first = " ".join((getattr(fn, "__doc__", None) or "").strip().split("\n\n")[0].split())
            where = f" [{fn.__module__}]" if plugins.is_external(fn) else ""
            rows.append((name + where, first if len(first) <= 100 else first[:99] + "…"))
        width = max((len(n) for n, _ in rows), default=0)
        return [f"{n:<{width}}  {d}".rstrip() for n, d in rows]

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            plugins.load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
