"""vlx: train vision-language (VLM) and vision-language-action (VLA) models from one codebase.

`vlx.load(dir)` rebuilds a trained model from a checkpoint directory. Everything else is reached through
the `vlx` command (see README) or the submodules; heavy imports (torch, transformers) happen lazily.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "load":
        from vlx.checkpoint import load

        return load
    raise AttributeError(f"module 'vlx' has no attribute {name!r}")
