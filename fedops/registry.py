"""One small registry helper used by every plug-in family.

A plug-in is a pydantic model whose fields are its keyword-only hyperparameters (so the config
validates them with ``extra="forbid"``) and whose methods do the work.  A config names a plug-in
by its registry key::

    partition:
      name: dirichlet
      alpha: 0.5

``Registry.build({"name": "dirichlet", "alpha": 0.5})`` looks the key up (unknown keys raise
``ValueError`` listing the known ones) and validates the remaining fields with that plug-in's
model.

Plug-ins from other packages register through Python entry points, one group per family
(``fedops.models``, ``fedops.datasets``, ``fedops.partitioners``, ``fedops.codecs``,
``fedops.aggregators``, ``fedops.server_optimizers``, ``fedops.selectors``, ``fedops.attacks``).
An entry point names a plug-in class (registered under the entry point's name) or a module
(imported; its classes register themselves with ``REGISTRY.register``). In ``pyproject.toml``::

    [project.entry-points."fedops.models"]
    tiny_linear = "my_package.models:TinyLinear"

They load the first time the family is looked up; one that fails to load is reported by name.
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T", bound=type)


class PluginModel(BaseModel):
    """Base for plug-ins: frozen, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, allow_inf_nan=False)

    name: str

    def params(self) -> dict[str, Any]:
        """Hyperparameters without the registry key, for manifests and tracking."""
        return self.model_dump(exclude={"name"})


class Registry(Generic[T]):
    """Maps a key to a class for one plug-in family (partitioner, aggregator, codec, ...)."""

    def __init__(self, family: str, *, entry_points: str | None = None) -> None:
        self.family = family
        self.entry_points = entry_points
        self._items: dict[str, T] = {}
        self._plugins_loaded = entry_points is None
        self._loading = False

    def register(self, key: str) -> Callable[[T], T]:
        def decorator(cls: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.family} {key!r} is registered twice")
            self._items[key] = cls
            return cls

        return decorator

    def _load_plugins(self) -> None:
        """Register the plug-ins other packages declare in this family's entry-point group (once;
        a plug-in that fails to load is reported again on the next lookup)."""
        if self._plugins_loaded or self._loading:
            return
        self._loading = True  # a plug-in module may look the family up while it is imported
        try:
            for ep in entry_points(group=self.entry_points):
                try:
                    obj = ep.load()
                except Exception as exc:  # a broken plug-in is named, not a traceback from deep inside
                    raise ValueError(f"{self.family} plug-in {ep.name!r} ({ep.value}, entry point group "
                                     f"{self.entry_points}) failed to load: {type(exc).__name__}: {exc}") from exc
                if inspect.ismodule(obj):
                    continue  # its classes registered themselves on import
                if not (isinstance(obj, type) and issubclass(obj, PluginModel)):
                    raise ValueError(f"{self.family} plug-in {ep.name!r} ({ep.value}) is not a fedops plug-in class "
                                     "(a subclass of the family's base model) or a module")
                if self._items.get(ep.name) is not obj:
                    self.register(ep.name)(obj)
            self._plugins_loaded = True
        finally:
            self._loading = False

    def keys(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, key: object) -> bool:
        self._load_plugins()
        return key in self._items

    def get(self, key: str) -> T:
        self._load_plugins()
        try:
            return self._items[key]
        except KeyError:
            raise ValueError(
                f"unknown {self.family} {key!r}; known: {', '.join(self.keys())}"
            ) from None

    def build(self, spec: Any) -> Any:
        """Instantiate a plug-in from ``{"name": key, **hyperparameters}`` (or an instance)."""
        if isinstance(spec, PluginModel):
            return spec
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(
                f"{self.family} must be a mapping with a 'name' key (one of: "
                f"{', '.join(self.keys())}); got {spec!r}"
            )
        cls = self.get(spec["name"])
        return cls.model_validate(spec)
