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
"""

from __future__ import annotations

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

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, key: str) -> Callable[[T], T]:
        def decorator(cls: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.family} {key!r} is registered twice")
            self._items[key] = cls
            return cls

        return decorator

    def keys(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str) -> T:
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
