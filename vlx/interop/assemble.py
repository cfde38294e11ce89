"""Turn a vlx config plus converted tensors into a vlx checkpoint directory, without random initialisation.

The model is built on the `meta` device (no memory, no weights, so a 7B import costs only the tensors
read from disk), its expected parameter names and shapes are checked against the converted tensors
(`check_tensors`: an error lists the offending names), the tensors are assigned in place, and the
standard `save_checkpoint` writes the directory that `vlx.load` opens.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vlx.builder import build_model
from vlx.checkpoint import save_checkpoint
from vlx.data.action_stats import ActionStats
from vlx.interop.tensors import check_tensors, expected_shapes
from vlx.llm.backbone import DTYPES
from vlx.model import VisionLanguageModel


def dtype_name(tensor: torch.Tensor | None) -> str:
    """`llm.dtype` for weights stored as `tensor` (e.g. the embedding): its dtype if vlx has it, else float32."""
    name = str(tensor.dtype).removeprefix("torch.") if tensor is not None else "float32"
    return name if name in DTYPES else "float32"


def build_empty(config: Mapping[str, Any]) -> VisionLanguageModel:
    """The model `config` describes, on the meta device, with its tokenizer loaded."""
    with torch.device("meta"):
        return build_model(dict(config), load_weights=False)


def write_checkpoint(
    config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], out: str | Path, where: str, layout: str,
    action_stats: Mapping[str, ActionStats] | None = None, metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Check `tensors` (vlx names) against the model `config` describes and save them as a checkpoint."""
    model = build_empty(config)
    check_tensors(tensors, expected_shapes(model), where, layout)
    model.load_state_dict(dict(tensors), strict=True, assign=True)
    model.action_stats = dict(action_stats or {})
    return save_checkpoint(model, out, metadata={"imported": {"format": layout, "source": where}, **(metadata or {})})
