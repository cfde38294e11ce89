"""The text head: the LLM's own LM head with masked next-token cross-entropy.

Loss covers exactly the positions whose label is not -100 (assistant answers and their EOS); a batch in
which no position carries a label is an error, never a silent zero loss. Metrics: token accuracy on
the supervised positions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlx.heads.base import HeadOutput, supervised_positions, text_loss
from vlx.registry import HEADS

__all__ = ["HeadOutput", "TextHead", "supervised_positions", "text_loss"]


@HEADS.register("text")
class TextHead(nn.Module):
    """Masked next-token prediction on the LLM's logits (no parameters of its own).

    Heads are built with the LLM backbone (`llm`) so that a head can add tokens; the text head needs none.
    """

    def __init__(self, llm: nn.Module | None = None) -> None:
        super().__init__()

    def forward(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> HeadOutput:
        return self.score(llm(embeds, batch["attention_mask"]), batch["labels"], batch.get("ids"))

    def score(self, logits: torch.Tensor, labels: torch.Tensor, sample_ids: list[str] | None = None) -> HeadOutput:
        """Loss and metrics of causal-LM logits (B, L, V) against labels (B, L) (-100: no loss)."""
        return text_loss(logits, labels, sample_ids)
