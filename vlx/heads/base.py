"""What every head shares: its output type, and the contract of the action heads.

A head owns what follows the prompt and what the LLM's outputs mean. The text head reads the logits of a
causal pass. An action head (`ActionHead`) predicts a chunk of `chunk_size` normalised actions of
`action_dim` values each and says, through `sequence`, what a VLA sample appends to its prompt: token ids,
their labels, and which positions are *action slots* (placeholders whose hidden states a one-pass head
reads). `forward(llm, embeds, batch)` runs whatever passes it needs and returns the loss and metrics — on a
batch of text (no `actions`: questions about the robot's frames before the actions stage, VLM co-training) it
is the text head's masked next-token loss, whatever the action head; `decode(llm, embeds, batch)` returns
the (B, K, A) normalised chunk. Nothing outside a head knows which
kind it is. Batches of robot data carry `actions` (B, K, A) normalised targets and `action_mask` (B, K),
False at steps past the end of a demonstration, which no loss or metric counts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlx.errors import ConfigError, DataError
from vlx.heads.instruction import check_instruction_rule, vla_question
from vlx.llm.prompts import IGNORE_INDEX


@dataclass
class HeadOutput:
    """Loss, logits (None for heads that read hidden states) and detached scalar metrics of one batch."""

    loss: torch.Tensor
    logits: torch.Tensor | None
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionSequence:
    """What an action head appends to a VLA prompt: ids, labels (-100: no loss) and action-slot flags."""

    input_ids: list[int]
    labels: list[int]
    slots: list[bool]


def supervised_positions(logits: torch.Tensor, labels: torch.Tensor,
                         sample_ids: list[str] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (S, V) and target ids (S,) of the S positions that carry a label; none at all is an error."""
    targets = labels[:, 1:]  # (B, L-1): token t is predicted at position t-1
    supervised = targets != IGNORE_INDEX  # (B, L-1)
    if not bool(supervised.any()):
        raise DataError(f"batch {sample_ids or '?'} has no supervised token: every label is -100")
    return logits[:, :-1][supervised], targets[supervised]  # (S, V), (S,)


def text_loss(logits: torch.Tensor, labels: torch.Tensor, sample_ids: list[str] | None = None) -> HeadOutput:
    """Masked next-token cross-entropy of causal-LM logits (B, L, V) and token accuracy on the labelled positions."""
    predictions, targets = supervised_positions(logits, labels, sample_ids)  # (S, V), (S,)
    loss = F.cross_entropy(predictions.float(), targets)
    with torch.no_grad():
        accuracy = (predictions.argmax(-1) == targets).float().mean()
    return HeadOutput(loss, logits, {"token_accuracy": accuracy})


def positive_int(value: Any, key: str) -> int:
    """`value` as an int >= 1, or a ConfigError naming the config key."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ConfigError(f"config key '{key}'={value!r}; expected a positive whole number")
    return int(value)


class ActionHead(nn.Module, ABC):
    """Base class of the action heads: `action_dim` values per step, `chunk_size` steps per prediction."""

    one_pass: bool = False  # decodes a whole chunk in one LLM pass (placeholder slots, 4-D attention mask)

    def __init__(self, action_dim: int, chunk_size: int = 1, instruction: str = "openvla") -> None:
        super().__init__()
        self.action_dim = positive_int(action_dim, "head.action_dim")
        self.chunk_size = positive_int(chunk_size, "head.chunk_size")
        self.instruction_rule = check_instruction_rule(instruction)

    def question(self, instruction: str) -> str:
        """The prompt's question for a robot instruction, under this head's `instruction` rule."""
        return vla_question(instruction, self.instruction_rule)

    @property
    def chunk_shape(self) -> tuple[int, int]:
        """(K, A): the shape of one predicted chunk."""
        return self.chunk_size, self.action_dim

    @abstractmethod
    def sequence(self, chunk: np.ndarray | None = None, mask: np.ndarray | None = None) -> ActionSequence:
        """The suffix of a training sample (normalised `chunk` (K, A), real steps `mask` (K,)) or, with no
        chunk, of an inference prompt."""

    def forward(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> HeadOutput:
        """Loss and metrics of a batch whose prompt embeddings (visual and state tokens spliced in) are `embeds`."""
        if "actions" not in batch:  # text: the LM's own next-token loss
            return text_loss(llm(embeds, batch["attention_mask"]), batch["labels"], batch.get("ids"))
        return self.action_forward(llm, embeds, batch)

    @abstractmethod
    def action_forward(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> HeadOutput:
        """Loss and metrics of a batch of robot data (`actions`, `action_mask`, the head's suffix)."""

    @abstractmethod
    def decode(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The normalised chunk (B, K, A) for left-padded inference prompts `embeds` (B, L, D)."""

    def targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's normalised target chunk (B, K, A) and real-step mask (B, K), checked against this head."""
        actions = batch["actions"]
        if actions.dim() == 2:  # (B, A): one step
            actions = actions[:, None]
        if tuple(actions.shape[1:]) != self.chunk_shape:
            raise DataError(f"batch actions have shape {tuple(actions.shape)} but the head predicts chunks of "
                            f"{self.chunk_shape} (head.chunk_size, head.action_dim)")
        mask = batch.get("action_mask")
        mask = torch.ones(actions.shape[:2], dtype=torch.bool, device=actions.device) if mask is None else mask.bool()
        if not bool(mask.any()):
            raise DataError(f"batch {batch.get('ids', '?')} has no real action step: every action_mask entry is False")
        return actions.float(), mask


def masked_l1(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |predicted - target| over the real steps: (B, K, A), (B, K, A), (B, K) → scalar."""
    weights = mask[..., None].expand_as(target).to(predicted.dtype)  # (B, K, A)
    return ((predicted - target).abs() * weights).sum() / weights.sum()
