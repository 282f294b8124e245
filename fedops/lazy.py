"""torch and pandas, imported on first use.

Loading a config validates every plug-in it names, and the plug-ins live beside the tensor code
that runs them. Importing torch takes seconds (4 s on a busy 2-core machine), so modules reached
by config validation bind ``torch``, ``nn``, ``F`` and ``pd`` to these stand-ins instead: the real module
is imported the first time an attribute is read, and its namespace then answers every later read
directly. A config error therefore reaches the user before torch or pandas is ever imported.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """A module object that imports ``name`` on the first attribute it cannot answer."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_fedops_loaded"] = False

    def __getattr__(self, attr: str) -> Any:
        if not self.__dict__["_fedops_loaded"]:
            module = importlib.import_module(self.__name__)
            self.__dict__.update(module.__dict__)
            self.__dict__["_fedops_loaded"] = True
            if attr in self.__dict__:
                return self.__dict__[attr]
        return getattr(importlib.import_module(self.__name__), attr)  # attributes added later (submodules)


torch = LazyModule("torch")
nn = LazyModule("torch.nn")
F = LazyModule("torch.nn.functional")
pd = LazyModule("pandas")
