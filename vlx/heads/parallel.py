"""`action-tokens-parallel`: OpenVLA-OFT's parallel decoding of action tokens — a whole chunk in one pass.

K·A action slots follow the prompt (see `vlx.heads.one_pass`); the hidden state at slot j is scored by the
LM head and predicts the token of action value j (step-major), so a chunk costs one LLM pass instead of
K·A decoding steps. Unlike OFT, whose slot j reads the hidden state one position earlier (the LM's shift,
kept from autoregressive training), vlx reads each slot's own hidden state: with slots that see each other
there is nothing to shift for. Training: cross-entropy over the whole vocabulary at the slots of the real
steps (OFT's loss); decoding: the argmax among the 256 action tokens only, so every output is a valid action.
Metrics as the autoregressive head's: token_accuracy, action_accuracy, action_l1 (normalised units).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlx.heads.action import TokenActionHead, token_output
from vlx.heads.base import ActionSequence, HeadOutput
from vlx.heads.one_pass import slot_hidden_states
from vlx.llm.prompts import IGNORE_INDEX
from vlx.registry import HEADS


@HEADS.register("action-tokens-parallel")
class ParallelActionTokenHead(TokenActionHead):
    """K·A action slots after the prompt, scored by the LM head in one bidirectional-among-slots pass."""

    one_pass = True

    @property
    def num_slots(self) -> int:
        return self.chunk_size * self.action_dim

    def sequence(self, chunk: np.ndarray | None = None, mask: np.ndarray | None = None) -> ActionSequence:
        slots = [True] * self.num_slots
        placeholders = [self.pad_id] * self.num_slots  # the embedding is zeroed: the id does not matter
        if chunk is None:
            return ActionSequence(placeholders, [IGNORE_INDEX] * self.num_slots, slots)
        _, labels = self.chunk_tokens(chunk, mask)
        return ActionSequence(placeholders, labels, slots)

    def slot_logits(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any],
                    rows: slice | None = None) -> torch.Tensor:
        """Logits at the slots (B, S, V), or of the vocabulary rows `rows` only (B, S, len(rows))."""
        hidden = slot_hidden_states(llm, embeds, batch, self.num_slots)  # (B, S, D)
        head = llm.output_layer()
        if rows is None:
            return head(hidden)  # (B, S, V)
        bias = None if head.bias is None else head.bias[rows]
        return F.linear(hidden, head.weight[rows], bias)  # (B, S, n_bins)

    def action_forward(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> HeadOutput:
        logits = self.slot_logits(llm, embeds, batch)  # (B, S, V)
        slots = batch["action_slots"].to(embeds.device).bool()  # (B, L)
        labels = batch["labels"].to(embeds.device)[slots].reshape(logits.shape[:2])  # (B, S), no shift
        supervised = labels != IGNORE_INDEX  # (B, S)
        self.targets(batch)  # checks the chunk shape and that some step is real
        return token_output(logits[supervised], labels[supervised], logits, self.codec)  # (N, V), (N,)

    def decode(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        codec = self.codec
        scores = self.slot_logits(llm, embeds, batch, slice(codec.first_id, codec.top_id))  # (B, S, n_bins)
        ids = scores.argmax(-1) + codec.first_id  # (B, S)
        return codec.decode_torch(ids).reshape(-1, *self.chunk_shape)  # (B, K, A)
