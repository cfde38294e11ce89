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

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, Strategy
from torch import nn

from vlx.errors import ConfigError
from vlx.model import VisionLanguageModel
from vlx.registry import check_arguments
from vlx.vision.base import VisionBackbone

SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD")
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
                   accelerator: str | None = None, world_size: int | None = None) -> str | Strategy:
    """Lightning's `strategy` argument for `spec` (see the module docstring); `world_size` is the number of
    processes (devices × nodes) where known."""
    if spec is None or isinstance(spec, str):
        if is_sharded(spec):
            raise ConfigError(f"{where}={spec!r}: give sharded strategies as vlx's config node (trainer=fsdp, "
                              "trainer=deepspeed), which sets the wrap policy and gathers weights for checkpoints",
                              kind="strategy")
        return spec or "auto"
    settings = dict(spec)
    name = settings.pop("name", None)
    if name in ("fsdp", "deepspeed") and accelerator == "cpu":
        raise ConfigError(f"{where}.name={name} needs GPUs (Lightning runs it on CUDA only), but "
                          "trainer.accelerator=cpu; on a CPU use trainer=ddp")
    if name == "fsdp" and world_size == 1:  # PyTorch turns FSDP into NO_SHARD there (refused just below)
        raise ConfigError(f"{where}.name=fsdp on one device has nothing to shard (trainer.devices × "
                          "trainer.num_nodes = 1); on one GPU use trainer=gpu", kind="strategy")
    if name == "fsdp" and settings.get("sharding_strategy") == "NO_SHARD":  # its state dict loses frozen root weights
        raise ConfigError(f"{where}.sharding_strategy=NO_SHARD replicates every weight, which is DDP: use trainer=ddp "
                          "(under FSDP's NO_SHARD the checkpoint would miss frozen embeddings)", kind="strategy")
    if name == "deepspeed" and settings.get("stage") == 3:  # vlx gathers sharded weights under FSDP only
        raise ConfigError(f"{where}.stage=3 shards the parameters, and vlx cannot yet gather them from DeepSpeed "
                          "for its checkpoints: use trainer=fsdp (or stage 2)", kind="strategy")
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


def gathered_weights(trainer: L.Trainer) -> dict[str, torch.Tensor] | None:
    """The stage model's full weights, named as in `VisionLanguageModel.state_dict()`, when the strategy shards
    them (FSDP), gathered by FSDP's own full-state-dict machinery onto rank 0's CPU (other ranks get `{}`).

    Every rank must call it (gathering is a collective). None where each rank holds whole weights (the
    model's own state dict is right). The wrapped model's `state_dict()` is not: FSDP keeps the outermost
    unit's parameters (embeddings, final norm, LM head) as plain tensors after a forward pass, so they vanish.
    """
    if not isinstance(trainer.strategy, FSDPStrategy):
        return None
    return fsdp_full_state_dict(trainer.strategy.model, prefix="model.")  # VlxModule.model


def tied_aliases(model: nn.Module) -> set[str]:
    """Names of parameters that are the same tensor as an earlier name (an LM head tied to the embeddings).
    Take them before FSDP wraps the model: its full state dict returns each name as a separate copy."""
    first = {name for name, _ in model.named_parameters()}
    return {name for name, _ in model.named_parameters(remove_duplicate=False)} - first


def fsdp_full_state_dict(root: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The full state dict of an FSDP root on rank 0 (CPU tensors; `{}` elsewhere), keys under `prefix` with the
    prefix removed."""
    from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType

    config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FullyShardedDataParallel.state_dict_type(root, StateDictType.FULL_STATE_DICT, config):
        state = root.state_dict()
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
