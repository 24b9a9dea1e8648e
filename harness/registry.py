"""A small name -> factory registry with lazy imports, aliases and suggestions.

Entries are stored as ``"module:attr"`` strings so that optional heavy dependencies
(coremltools, mlx) are imported only when the entry is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from harness.errors import UserError, suggest

T = TypeVar("T")


def import_target(target: str) -> Any:
    """Import ``"package.module:attr"`` (or ``"package.module.attr"``) and return the attr."""
    if ":" in target:
        module_name, attr = target.split(":", 1)
    else:
        module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"cannot import {module_name!r} for {target!r}: {e}") from e
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise UserError(f"{module_name!r} has no attribute {attr!r} (from {target!r})") from e
    return obj


class Registry(Generic[T]):
    """Maps canonical names (and aliases) to objects or lazily imported targets."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T | str] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, obj: T | str, aliases: tuple[str, ...] = ()) -> None:
        key = name.lower()
        self._entries[key] = obj
        for alias in aliases:
            self._aliases[alias.lower()] = key

    def canonical(self, name: str) -> str:
        key = str(name).strip().lower()
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise UserError(suggest(name, self.names(), self.what))
        return key

    def get(self, name: str) -> T:
        key = self.canonical(name)
        entry = self._entries[key]
        if isinstance(entry, str):
            entry = import_target(entry)
            self._entries[key] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def aliases(self) -> dict[str, tuple[str, ...]]:
        """Canonical name -> its registered aliases (every name, aliases or not)."""
        out: dict[str, list[str]] = {name: [] for name in self._entries}
        for alias, name in self._aliases.items():
            out[name].append(alias)
        return {name: tuple(sorted(a)) for name, a in out.items()}

    def __contains__(self, name: object) -> bool:
        key = str(name).strip().lower()
        return self._aliases.get(key, key) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def call_target(target: str, **kwargs: Any) -> Any:
    fn: Callable[..., Any] = import_target(target)
    return fn(**kwargs)
