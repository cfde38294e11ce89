"""Shared tensor plumbing of the converters: read safetensors directories, rename prefixes, check shapes.

A Hugging Face model directory holds its weights in `model.safetensors` or in shards listed by
`model.safetensors.index.json`; `read_safetensors_dir` reads either. `rename_prefixes` maps parameter
names between two layouts with an ordered table of (source prefix, target prefix) pairs.
`check_tensors` compares the tensors a file provides with those a model expects and raises one
`CheckpointError` naming the first few missing, unexpected and mis-shaped tensors with their expected
shapes, so a wrong or truncated checkpoint never loads silently or fails with a bare torch message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vlx.errors import CheckpointError

SINGLE_FILE, INDEX_FILE = "model.safetensors", "model.safetensors.index.json"
SHOWN = 5  # names listed per kind of problem


def read_safetensors_dir(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the directory's `model.safetensors` (or of the shards its index lists)."""
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index with a 'weight_map' ({exc})") from None
    elif (directory / SINGLE_FILE).is_file():
        files = [SINGLE_FILE]
    else:
        raise CheckpointError(f"{directory} has no {SINGLE_FILE} and no {INDEX_FILE}; expected safetensors weights")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{index}: lists the shard {name}, which is missing")
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    return tensors


def rename_prefixes(
    tensors: Mapping[str, torch.Tensor], table: Sequence[tuple[str, str]], keep_unmatched: bool = True
) -> dict[str, torch.Tensor]:
    """Rename each name by the first (source, target) prefix pair that matches it.

    Names no pair matches are kept as they are (so `check_tensors` reports them as unexpected) unless
    `keep_unmatched` is False.
    """
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        for source, target in table:
            if name.startswith(source):
                renamed[target + name[len(source):]] = tensor
                break
        else:
            if keep_unmatched:
                renamed[name] = tensor
    return renamed


def _listed(items: list[str]) -> str:
    more = f", ... ({len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def check_tensors(
    found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size | Sequence[int]], where: str, layout: str
) -> None:
    """Raise a CheckpointError unless `found` has exactly the names and shapes of `expected`.

    `where` names the file or directory the tensors came from, `layout` the format they were read as.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(name for name in set(found) & set(expected) if tuple(found[name].shape) != tuple(expected[name]))
    if not (missing or unexpected or wrong):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: "
                        + _listed([f"{n} (expected {tuple(expected[n])})" for n in missing]))
    if wrong:
        described = [f"{n} is {tuple(found[n].shape)}, expected {tuple(expected[n])}" for n in wrong]
        problems.append(f"{len(wrong)} with the wrong shape: " + _listed(described))
    if unexpected:
        described = [f"{n} {tuple(found[n].shape)}" for n in unexpected]
        problems.append(f"{len(unexpected)} unexpected: " + _listed(described))
    raise CheckpointError(f"{where} does not match the {layout} its config describes: " + "; ".join(problems))


def expected_shapes(module: torch.nn.Module) -> dict[str, torch.Size]:
    """Names and shapes of a module's state dict (works on the `meta` device)."""
    return {name: tensor.shape for name, tensor in module.state_dict().items()}
