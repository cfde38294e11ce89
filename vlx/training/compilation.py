"""`torch.compile` of model parts for training, as an option (`compile.parts=[vision,llm]`).

Parts are compiled in place with `nn.Module.compile`, so parameter names, checkpoints and freezing stay
as they are; only the forward passes of the named parts run through the compiler. Compiling the whole
LightningModule is avoided on purpose: in the Lightning release used here it breaks `self.log`.
"""

from __future__ import annotations

from typing import Any

from vlx.errors import ConfigError
from vlx.model import PARTS, VisionLanguageModel


def compile_parts(model: VisionLanguageModel, spec: dict[str, Any] | None, where: str = "compile") -> list[str]:
    """Compile the parts `spec["parts"]` names with `spec`'s backend and mode; returns the compiled parts."""
    spec = dict(spec or {})
    parts = list(spec.get("parts") or [])
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ConfigError(f"{where}.parts names unknown parts {unknown}; expected some of {', '.join(PARTS)}")
    absent = [part for part in parts if part not in model.parts()]
    if absent:
        raise ConfigError(f"{where}.parts names {absent}, which this model does not have (no state input)")
    options = {key: spec[key] for key in ("backend", "mode", "fullgraph", "dynamic") if spec.get(key) is not None}
    for part in parts:
        getattr(model, part).compile(**options)
    return parts
