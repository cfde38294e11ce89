"""Optimiser and learning-rate schedule of a stage: AdamW with decoupled weight decay + warm-up/decay.

Weight decay applies to matrices (Linear, embedding, conv weights) and never to norms and biases
(parameters with fewer than two dimensions). The schedule is transformers' `get_scheduler` (linear
warm-up over `warmup_ratio` of the steps, then `cosine`, `linear` or `constant`), stepped every
optimiser step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from transformers import get_scheduler

from vlx.errors import ConfigError

SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def parameter_groups(named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
                     weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split into a decayed group (ndim ≥ 2) and a non-decayed group."""
    decay, no_decay = [], []
    for _, param in named_parameters:
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, stage: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW over the model's trainable parameters with the stage's lr, betas and weight decay."""
    groups = parameter_groups(model.named_parameters(), float(stage["weight_decay"]))
    return torch.optim.AdamW(groups, lr=float(stage["lr"]), betas=tuple(stage["betas"]), eps=float(stage["eps"]))


def build_schedule(optimizer: torch.optim.Optimizer, stage: Mapping[str, Any], total_steps: int) -> Any:
    """The stage's warm-up + decay schedule over `total_steps` optimiser steps."""
    if stage["schedule"] not in SCHEDULES:
        raise ConfigError(f"config key 'stage.schedule'={stage['schedule']!r}; expected one of {', '.join(SCHEDULES)}")
    warmup = math.ceil(float(stage["warmup_ratio"]) * total_steps)
    return get_scheduler(SCHEDULES[stage["schedule"]], optimizer, num_warmup_steps=warmup,
                         num_training_steps=total_steps)
