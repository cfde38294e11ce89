"""Distributed strategies from the `trainer.strategy` config node: DDP, FSDP and DeepSpeed through Lightning.

A string (`auto`, `ddp`, `ddp_spawn`, ...) goes to Lightning unchanged. A mapping names a strategy and its
settings: `{name: ddp, find_unused_parameters: false}`; `{name: fsdp, sharding_strategy: FULL_SHARD |
SHARD_GRAD_OP | NO_SHARD | HYBRID_SHARD, activation_checkpointing: true, ...}`, whose wrap policy vlx
derives from the model — every LLM decoder layer (the classes transformers lists in `_no_split_modules`),
every vision-transformer block, each vision tower and the projector become their own FSDP unit, and
activation checkpointing wraps the decoder layers; `{name: deepspeed, stage: 2, ...}` (the optional
`vlx[deepspeed]` extra). Frozen parts can be stored in bf16 under bf16 mixed precision
(`frozen_dtype: bfloat16`, FSDP's default in `conf/trainer/fsdp.yaml`), which halves their memory; trained
parts stay fp32 (so a vision tower trained by the `full` stage keeps fp32 master weights).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, Strategy
from torch import nn

from vlx.errors import ConfigError
from vlx.model import VisionLanguageModel
from vlx.registry import check_arguments
from vlx.vision.base import VisionBackbone

SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _class_named(model: nn.Module, names: set[str]) -> set[type[nn.Module]]:
    return {type(module) for module in model.modules() if type(module).__name__ in names}


def decoder_layer_classes(model: VisionLanguageModel) -> set[type[nn.Module]]:
    """The LLM's repeated layer classes (transformers' `_no_split_modules`, e.g. LlamaDecoderLayer)."""
    names = set(getattr(model.llm.model, "_no_split_modules", None) or [])
    classes = _class_named(model.llm, names)
    if not classes:
        raise ConfigError(f"trainer.strategy: the LLM ({type(model.llm.model).__name__}) names no decoder-layer "
                          "class in _no_split_modules, so FSDP cannot wrap it layer by layer")
    return classes


def vision_block_classes(model: VisionLanguageModel) -> set[type[nn.Module]]:
    """Transformer-block classes of the vision tower(s): timm `Block`s and transformers encoder layers."""
    from timm.models.vision_transformer import Block

    classes = {type(m) for m in model.vision.modules() if isinstance(m, Block)}
    for module in model.vision.modules():  # transformers towers (CLIP) list their layers like LLMs do
        classes |= _class_named(model.vision, set(getattr(module, "_no_split_modules", None) or []))
    return classes


def fsdp_wrap_classes(model: VisionLanguageModel) -> set[type[nn.Module]]:
    """FSDP units: decoder layers, vision blocks, each vision tower (its embeddings and norms) and the projector."""
    towers = {type(m) for m in model.vision.modules() if isinstance(m, VisionBackbone)}
    return decoder_layer_classes(model) | vision_block_classes(model) | towers | {type(model.projector)}


def cast_frozen(model: nn.Module, dtype: torch.dtype) -> list[str]:
    """Store every module whose parameters are all frozen in `dtype`; returns their names (outermost only)."""
    cast: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(f"{done}.") for done in cast) or not name:
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.to(dtype)
            cast.append(name)
    return cast


def build_strategy(spec: str | Mapping[str, Any] | None, model: VisionLanguageModel, where: str = "trainer.strategy",
                   accelerator: str | None = None) -> str | Strategy:
    """Lightning's `strategy` argument for `spec` (see the module docstring)."""
    if spec is None or isinstance(spec, str):
        return spec or "auto"
    settings = dict(spec)
    name = settings.pop("name", None)
    if name in ("fsdp", "deepspeed") and accelerator == "cpu":
        raise ConfigError(f"{where}.name={name} needs GPUs (Lightning runs it on CUDA only), but trainer.accelerator=cpu;"
                          " on a CPU use trainer=ddp")
    frozen_dtype = settings.pop("frozen_dtype", None)
    if frozen_dtype is not None:
        if frozen_dtype not in DTYPES:
            raise ConfigError(f"{where}.frozen_dtype={frozen_dtype!r}; expected one of {', '.join(DTYPES)}")
        cast_frozen(model, DTYPES[frozen_dtype])
    if name == "ddp":
        check_arguments(DDPStrategy, settings, where, "Lightning's DDPStrategy")
        return DDPStrategy(**settings)
    if name == "fsdp":
        return _fsdp(model, settings, where)
    if name == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise ConfigError(f"{where}.name=deepspeed needs DeepSpeed: pip install 'vlx[deepspeed]'") from None
        check_arguments(DeepSpeedStrategy, settings, where, "Lightning's DeepSpeedStrategy")
        return DeepSpeedStrategy(**settings)
    raise ConfigError(f"{where}.name={name!r}; expected ddp, fsdp or deepspeed (or a Lightning strategy string)")


def _fsdp(model: VisionLanguageModel, settings: dict[str, Any], where: str) -> FSDPStrategy:
    sharding = settings.pop("sharding_strategy", "FULL_SHARD")
    if sharding not in SHARDING:
        raise ConfigError(f"{where}.sharding_strategy={sharding!r}; expected one of {', '.join(SHARDING)}")
    checkpointing = bool(settings.pop("activation_checkpointing", True))
    check_arguments(FSDPStrategy, settings, where, "Lightning's FSDPStrategy")
    return FSDPStrategy(
        auto_wrap_policy=fsdp_wrap_classes(model),
        activation_checkpointing_policy=decoder_layer_classes(model) if checkpointing else None,
        sharding_strategy=sharding,
        use_orig_params=settings.pop("use_orig_params", True),  # frozen and trained parameters share units
        **settings,
    )


def is_sharded(spec: str | Mapping[str, Any] | None) -> bool:
    """Whether the strategy shards the model's parameters (FSDP, DeepSpeed), so they must be gathered to save."""
    name = spec if isinstance(spec, str) or spec is None else spec.get("name")
    return bool(name) and str(name).split("_")[0] in ("fsdp", "deepspeed")


@contextmanager
def full_parameters(trainer: L.Trainer) -> Iterator[None]:
    """Inside, the model's parameters hold their full values on rank 0 (FSDP gathers them; others: no-op).

    Every rank must enter (gathering is a collective); only rank 0 should read the parameters.
    """
    if not isinstance(trainer.strategy, FSDPStrategy):
        yield
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(trainer.strategy.model, writeback=False, rank0_only=True,
                                                     offload_to_cpu=True):
        yield
