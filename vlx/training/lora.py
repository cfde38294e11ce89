"""LoRA fine-tuning of the LLM through peft, and merging the adapters back into plain weights.

A stage with a `lora:` node (`{r, alpha, dropout, target_modules}`; OpenVLA: r 32, alpha 16, dropout 0,
all linear layers) wraps the LLM's transformers model with peft adapters after freezing: the base
weights stay frozen and bit-for-bit unchanged, only the adapters (and the parts the stage names, e.g.
the projector) train. At the end of the stage `merge_lora` folds the adapters into the weights, so the
saved checkpoint is a plain model that loads, serves and exports without peft.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model

from vlx.errors import ConfigError
from vlx.model import VisionLanguageModel
from vlx.registry import check_arguments
from vlx.training.stages import apply_stage

LORA_DEFAULTS = {"r": 32, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}


def lora_config(settings: Mapping[str, Any], where: str) -> LoraConfig:
    """peft's LoraConfig from a stage's `lora` node (names checked, defaults as OpenVLA's)."""
    def accepted(r: int = 32, alpha: float = 16, dropout: float = 0.0, target_modules: Any = "all-linear") -> None: ...

    check_arguments(accepted, settings, where, "the LoRA settings")
    merged = {**LORA_DEFAULTS, **settings}
    if int(merged["r"]) < 1:
        raise ConfigError(f"config key '{where}.r'={merged['r']}; the LoRA rank must be at least 1")
    return LoraConfig(r=int(merged["r"]), lora_alpha=float(merged["alpha"]), lora_dropout=float(merged["dropout"]),
                      target_modules=merged["target_modules"])


def add_lora(model: VisionLanguageModel, settings: Mapping[str, Any], where: str) -> None:
    """Wrap the (frozen) LLM with trainable LoRA adapters."""
    if isinstance(model.llm.model, PeftModel):
        raise ConfigError(f"config key '{where}': the LLM already carries LoRA adapters")
    try:
        model.llm.model = get_peft_model(model.llm.model, lora_config(settings, where))
    except ValueError as exc:  # e.g. target_modules that match nothing
        raise ConfigError(f"config key '{where}': {exc}") from None


def merge_lora(model: VisionLanguageModel) -> bool:
    """Fold LoRA adapters into the LLM's weights (no-op without adapters); True when it merged."""
    if not isinstance(model.llm.model, PeftModel):
        return False
    model.llm.model = model.llm.model.merge_and_unload()
    return True


def set_up_stage(model: VisionLanguageModel, stage: Mapping[str, Any], where: str) -> None:
    """A stage's trainable parts (`trainable`; none is allowed with `lora`) and its LoRA adapters (`lora`), as
    training sets them up; `vlx info` counts parameters on the same set-up."""
    apply_stage(model, stage["trainable"], f"{where}.trainable", allow_none=bool(stage.get("lora")))
    if stage.get("lora"):
        add_lora(model, stage["lora"], f"{where}.lora")
