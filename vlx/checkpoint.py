"""vlx checkpoint directories: save a model and rebuild it from the directory alone.

Layout: `config.yaml` (the resolved config, with the vision and LLM nodes replaced by their exact
architectures and no external source), `model.safetensors` (all weights), `tokenizer/`,
`action_stats.json` (VLAs only: action statistics per dataset name), `state_stats.json` (models with a
state input: the state statistics per dataset name, beside the action statistics) and `vlx.json` (format version,
parameter counts, free-form metadata such as the stage). Saving writes into a
temporary sibling directory and renames it into place, so an interrupted save never leaves a
half-written checkpoint under the final name. `load(dir)` needs no network and no original weights.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file

from vlx.builder import build_model
from vlx.data.action_stats import stats_from_table, stats_table
from vlx.errors import CheckpointError, ConfigError, DataError
from vlx.model import VisionLanguageModel

FORMAT_VERSION = 1
CONFIG, WEIGHTS, TOKENIZER, META = "config.yaml", "model.safetensors", "tokenizer", "vlx.json"
ACTION_STATS, STATE_STATS = "action_stats.json", "state_stats.json"


def weights_to_save(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as safetensors takes it: one name per group of tied tensors (what `save_model` writes, so
    `load_model` accepts the file) and each tensor in memory of its own (views into a larger buffer, such as
    FSDP's flat parameters, are copied: safetensors refuses them)."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[Any, ...]] = set()
    for name, tensor in state.items():
        key = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if key in seen:  # tied to a tensor saved already (e.g. an LM head sharing the embeddings)
            continue
        seen.add(key)
        whole = tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        tensors[name] = tensor.detach() if whole else tensor.detach().clone(memory_format=torch.contiguous_format)
    return tensors


def checkpoint_config(model: VisionLanguageModel) -> dict[str, Any]:
    """The model's config with parts rebuilt from their exact architectures, not their sources."""
    config = dict(model.config)
    config["vision"] = model.vision.spec()
    config["llm"] = {**model.llm.spec(), "tokenizer": None}
    return config


def save_checkpoint(model: VisionLanguageModel, directory: str | Path, metadata: dict[str, Any] | None = None,
                    weights: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write `model` as a self-contained checkpoint directory (atomically replaced) and return its path.

    `weights` replaces `model.state_dict()` where the model's own tensors are not whole (gathered from FSDP
    shards); `metadata` goes into `vlx.json` and may replace its `parameters` counts likewise.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    OmegaConf.save(OmegaConf.create(checkpoint_config(model)), staging / CONFIG)
    save_file(weights_to_save(model.state_dict() if weights is None else weights), str(staging / WEIGHTS),
              metadata={"format": "pt"})
    model.tokenizer.save_pretrained(staging / TOKENIZER)
    for name, table in ((ACTION_STATS, model.action_stats), (STATE_STATS, model.state_stats)):
        if table:
            (staging / name).write_text(json.dumps(stats_table(table), indent=2))
    meta = {"format_version": FORMAT_VERSION, "parameters": model.parameter_counts(), **(metadata or {})}
    (staging / META).write_text(json.dumps(meta, indent=2))
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired)
    else:
        staging.rename(target)
    return target


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's `vlx.json`."""
    path = Path(directory) / META
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a vlx checkpoint: {META} is missing")
    return json.loads(path.read_text())


def check_shapes(weights: Path, model: torch.nn.Module, config: Path) -> None:
    """A CheckpointError naming the first tensor of `weights` whose shape differs from `model`'s (read from the
    safetensors header only), e.g. a projector saved for another vision width."""
    try:
        with safe_open(str(weights), "pt") as file:
            shapes = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc})", kind="corrupt-weights") from None
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    for name, shape in shapes.items():
        if name in expected and expected[name] != shape:
            raise CheckpointError(f"{weights}: tensor {name!r} has shape {list(shape)} but the model described by "
                                  f"{config} needs {list(expected[name])}; the weights and config.yaml do not belong "
                                  "together", kind="weights-mismatch")


def load(directory: str | Path, device: str | torch.device = "cpu") -> VisionLanguageModel:
    """Rebuild the model saved in `directory` (no network, no original weights needed)."""
    root = Path(directory).expanduser()
    for name in (CONFIG, WEIGHTS, TOKENIZER):
        if not (root / name).exists():
            raise CheckpointError(f"{root} is not a complete vlx checkpoint: {name} is missing",
                                  kind="incomplete-checkpoint")
    try:
        config = OmegaConf.to_container(OmegaConf.load(root / CONFIG), resolve=True)
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise CheckpointError(f"{root / CONFIG} is not a readable vlx config: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict) or not isinstance(config.get("llm"), dict):
        raise CheckpointError(f"{root / CONFIG} is not a vlx model config: expected a mapping with an 'llm' node")
    config["llm"]["tokenizer"] = str(root / TOKENIZER)
    try:
        model = build_model(config, load_weights=False)
    except ConfigError as exc:  # e.g. an unknown part name or a _target_ in the saved config
        raise CheckpointError(f"{root / CONFIG}: {exc}", kind=exc.kind) from None
    check_shapes(root / WEIGHTS, model, root / CONFIG)
    missing, unexpected = load_model(model, str(root / WEIGHTS), strict=False, device=str(device))
    if missing or unexpected:
        raise CheckpointError(
            f"{root / WEIGHTS} does not match the model in {root / CONFIG}: "
            f"missing {sorted(missing)[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {sorted(unexpected)[:5]}{'...' if len(unexpected) > 5 else ''}", kind="weights-mismatch",
        )
    for name, what in ((ACTION_STATS, "action"), (STATE_STATS, "state")):
        stats_file = root / name
        if stats_file.is_file():
            try:
                setattr(model, f"{what}_stats", stats_from_table(json.loads(stats_file.read_text()), str(stats_file)))
            except (json.JSONDecodeError, DataError) as exc:
                raise CheckpointError(f"{stats_file} is not a valid {what}-statistics table: {exc}",
                                      kind="bad-action-stats") from None
    return model.to(device).eval()
