"""Stages as data: which parts of the model train, and where the weights start from.

`align` trains the projector only, `finetune` the projector and the LLM, `full` everything, `lora` the
projector plus LoRA adapters on the frozen LLM (see `vlx.training.lora`); the stages that train actions also
name `proprio` and `head` (the state projector and the parameters of regression/flow heads, which start
fresh), parts a model may lack or that may have no parameters (text and token heads). Freezing
sets `requires_grad=False` on every parameter of the frozen parts; the model keeps frozen parts in eval
mode, and the optimiser only ever sees trainable parameters, so frozen weights stay bit-for-bit
unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from vlx.errors import ConfigError
from vlx.model import PARTS, VisionLanguageModel


def apply_stage(
    model: VisionLanguageModel, trainable: Sequence[str], where: str = "stage.trainable", allow_none: bool = False
) -> None:
    """Make exactly the parts named in `trainable` trainable; freeze the rest.

    `allow_none`: the stage adds trainable parameters of its own afterwards (LoRA adapters).
    """
    unknown = [part for part in trainable if part not in PARTS]
    if unknown:
        raise ConfigError(f"config key '{where}' names unknown parts {unknown}; parts are {', '.join(PARTS)}")
    for part, module in model.parts().items():
        module.requires_grad_(part in trainable)
    if not allow_none and not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"config key '{where}'={list(trainable)} leaves no trainable parameter")


def reinitialise(module: nn.Module) -> None:
    """Fresh random weights for every submodule that knows how to reset itself (Prismatic's no-align)."""
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
