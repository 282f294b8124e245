"""A tiny observer hook so front ends (the CLI's progress bar) can follow a training flow without
the flow knowing about them."""

from __future__ import annotations

from typing import Any, Callable

Listener = Callable[[str, dict[str, Any]], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> Callable[[], None]:
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def emit(event: str, **data: Any) -> None:
    for listener in list(_listeners):
        listener(event, data)
