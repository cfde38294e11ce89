"""`l1-regression`: OpenVLA-OFT's continuous action head — one pass, an MLP on the slots' hidden states, L1 loss.

K·A action slots follow the prompt (`vlx.heads.one_pass`). The LLM's last hidden states at the slots,
(B, K·A, D), are regrouped per step as (B, K, A·D) — the A slots of a step side by side, as OFT does — and an
action MLP (registry `ACTION_MLPS`, default OFT's `mlp-resnet` with hidden width D) maps each step to A
normalised values. Loss: mean absolute error over the real steps (OFT's `L1Loss` on normalised actions);
the metric `action_l1` is the same quantity, and decoding is the same pass without a loss. Outputs are not
clipped (OFT does not clip them either); un-normalisation and the robot's limits take care of the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vlx.heads.base import ActionHead, ActionSequence, HeadOutput, masked_l1
from vlx.heads.one_pass import slot_hidden_states
from vlx.llm.prompts import IGNORE_INDEX
from vlx.registry import ACTION_MLPS, HEADS


@HEADS.register("l1-regression")
class L1RegressionHead(ActionHead):
    """Continuous chunks from the slots' hidden states through an action MLP (`mlp`: a registry node)."""

    one_pass = True

    def __init__(self, action_dim: int, llm: nn.Module, chunk_size: int = 1,
                 mlp: dict[str, Any] | None = None, instruction: str = "openvla") -> None:
        super().__init__(action_dim, chunk_size, instruction)
        width = int(llm.hidden_size)
        node = {"name": "mlp-resnet", **(mlp or {})}
        self.mlp = ACTION_MLPS.build(node, "head.mlp", in_dim=self.action_dim * width, out_dim=self.action_dim,
                                     llm_dim=width)
        tokenizer = getattr(llm, "tokenizer", None)
        self.pad_id = 0 if tokenizer is None else int(tokenizer.pad_token_id)

    @property
    def num_slots(self) -> int:
        return self.chunk_size * self.action_dim

    def sequence(self, chunk: np.ndarray | None = None, mask: np.ndarray | None = None) -> ActionSequence:
        return ActionSequence([self.pad_id] * self.num_slots, [IGNORE_INDEX] * self.num_slots, [True] * self.num_slots)

    def predict(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The normalised chunk (B, K, A) of one pass."""
        hidden = slot_hidden_states(llm, embeds, batch, self.num_slots)  # (B, K·A, D)
        per_step = hidden.reshape(hidden.shape[0], self.chunk_size, -1)  # (B, K, A·D)
        dtype = next(self.mlp.parameters()).dtype
        return self.mlp(per_step.to(dtype)).float()  # (B, K, A)

    def action_forward(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> HeadOutput:
        target, mask = self.targets(batch)  # (B, K, A), (B, K)
        predicted = self.predict(llm, embeds, batch)  # (B, K, A)
        loss = masked_l1(predicted, target.to(predicted.device), mask.to(predicted.device))
        return HeadOutput(loss, None, {"action_l1": loss.detach()})

    def decode(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return self.predict(llm, embeds, batch)  # (B, K, A)
