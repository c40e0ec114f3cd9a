"""Package faces that import only what is asked for.

A package `__init__` lists the names it offers and the submodule that holds each; `from core.flame import
FlameModel` then imports `core.flame.model` (and torch) while `import core.flame.model_data` stays numpy-only.
This keeps `next3d --help` fast and lets the Blender side use core's numpy modules without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, Iterable, Tuple


def lazy_exports(package: str, exports: Dict[str, Iterable[str]]) -> Tuple[Callable, Callable, list]:
    """(`__getattr__`, `__dir__`, `__all__`) for `package`, given {submodule: names it exports}."""
    owner = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        module = owner.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{module}", package), name)

    def __dir__() -> list:
        return sorted(owner)

    return __getattr__, __dir__, sorted(owner)
