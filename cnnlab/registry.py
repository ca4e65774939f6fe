"""One registry helper for everything a user names: models, datasets, augmentation ops and lab
measures (timm's `register_model` / `create_model` / `list_models` pattern). A registry maps a
short stable name to what the decorator registered; `get` fails with the valid choices."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

from cnnlab.errors import UsageError


class Registry:
    """Names -> entries. `loader` imports the modules whose decorators fill the registry; it runs
    once, the first time the registry is read."""

    def __init__(self, kind: str, loader: Optional[Callable[[], None]] = None):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._loader = loader
        self._loaded = loader is None

    def set_loader(self, loader: Callable[[], None]) -> None:
        """The package that owns the registry says how to import its registering modules (so the
        registry module itself imports none of them: no import cycle)."""
        self._loader, self._loaded = loader, False

    def register(self, name: str, entry: Any = None):
        """Decorator: `@REG.register("name")` stores the function itself; `entry=` stores that
        instead (called with the function when it is callable, e.g. a dataclass factory)."""

        def wrap(fn):
            self._entries[name] = fn if entry is None else (entry(fn) if callable(entry) else entry)
            return fn

        return wrap

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            self._loader()

    def get(self, name: str) -> Any:
        self._load()
        if name not in self._entries:
            raise UsageError(f"unknown {self.kind} '{name}'; choose from: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, Any]]:
        self._load()
        return sorted(self._entries.items())

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __setitem__(self, name: str, entry: Any) -> None:  # tests register stand-ins this way
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)
