"""The text head: the LLM's own LM head with masked next-token cross-entropy.

Loss covers exactly the positions whose label is not -100 (assistant answers and their EOS); a batch in
which no position carries a label is an error, never a silent zero loss. Metrics: token accuracy on
the supervised positions.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlx.errors import DataError
from vlx.heads.base import HeadOutput
from vlx.llm.prompts import IGNORE_INDEX
from vlx.registry import HEADS

__all__ = ["HeadOutput", "TextHead", "supervised_positions"]


def supervised_positions(logits: torch.Tensor, labels: torch.Tensor, sample_ids: list[str] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (S, V) and target ids (S,) of the S positions that carry a label; none at all is an error."""
    targets = labels[:, 1:]  # (B, L-1): token t is predicted at position t-1
    supervised = targets != IGNORE_INDEX  # (B, L-1)
    if not bool(supervised.any()):
        raise DataError(f"batch {sample_ids or '?'} has no supervised token: every label is -100")
    return logits[:, :-1][supervised], targets[supervised]  # (S, V), (S,)


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
        predictions, targets = supervised_positions(logits, labels, sample_ids)  # (S, V), (S,)
        loss = F.cross_entropy(predictions.float(), targets)
        with torch.no_grad():
            accuracy = (predictions.argmax(-1) == targets).float().mean()
        return HeadOutput(loss, logits, {"token_accuracy": accuracy})
