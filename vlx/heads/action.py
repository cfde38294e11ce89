"""The action-token head (OpenVLA): the LLM's own LM head predicts one token per action dimension.

With `chunk_size` K > 1 a sample's answer is the K·A tokens of the actions t..t+K-1 (step by step, dimension
by dimension) then EOS, decoded autoregressively; K = 1 is OpenVLA exactly. Labels cover the action tokens of
the real steps and the closing EOS (steps past the end of a demonstration carry no loss); the loss is the
same masked next-token cross-entropy as the text head's. Metrics are computed on the action positions only:
`action_accuracy` (argmax among the action tokens equals the label) and `action_l1` (mean absolute error of
the decoded bin centres, in normalised [-1, 1] units). Token ids come from the base vocabulary's last
`n_bins` ids (`tokens: reuse-last`, OpenVLA's choice) or from `n_bins` new tokens (`tokens: new`, for small
vocabularies whose last ids are real words); `action_token_codec` sets them up for every token head.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlx.errors import ConfigError
from vlx.heads.action_decoding import decode_action_tokens
from vlx.heads.action_tokenizer import ActionTokenizer
from vlx.heads.base import ActionHead, ActionSequence, HeadOutput
from vlx.heads.text import supervised_positions
from vlx.llm.prompts import IGNORE_INDEX
from vlx.registry import HEADS

TOKEN_SOURCES = ("reuse-last", "new")


def new_action_tokens(n_bins: int) -> list[str]:
    """Names of the tokens added by `tokens: new`."""
    return [f"<act_{index}>" for index in range(n_bins)]


def action_token_codec(llm: nn.Module | None, n_bins: int, tokens: str,
                       base_vocab_size: int | None) -> ActionTokenizer | None:
    """The action tokenizer of a token head (adding `n_bins` tokens to the LLM for `tokens: new`); None when the
    LLM was built without its tokenizer (sizing on the meta device), so there is nothing to decode with."""
    if tokens not in TOKEN_SOURCES:
        raise ConfigError(f"head.tokens={tokens!r}; expected one of {', '.join(TOKEN_SOURCES)}")
    tokenizer = getattr(llm, "tokenizer", None)
    if tokens == "new" and tokenizer is not None:
        ids = llm.add_tokens(new_action_tokens(n_bins))  # type: ignore[union-attr]
        if ids != list(range(ids[0], ids[0] + n_bins)):
            raise ConfigError("the added action tokens did not get consecutive ids")
        return ActionTokenizer(ids[-1] + 1, n_bins)
    if tokens == "reuse-last" and (tokenizer is not None or base_vocab_size is not None):
        top = int(base_vocab_size if base_vocab_size is not None else tokenizer.vocab_size)
        if tokenizer is not None and base_vocab_size is not None and base_vocab_size != tokenizer.vocab_size:
            raise ConfigError(f"head.base_vocab_size={base_vocab_size}, but the tokenizer's base vocabulary "
                              f"has {tokenizer.vocab_size} ids")
        return ActionTokenizer(top, n_bins)
    return None


def token_metrics(predictions: torch.Tensor, targets: torch.Tensor, codec: ActionTokenizer) -> dict[str, torch.Tensor]:
    """token_accuracy over all supervised positions (S, V)/(S,); action_accuracy and action_l1 on the action
    tokens among them, with the argmax constrained to the action ids (none for text batches)."""
    metrics = {"token_accuracy": (predictions.argmax(-1) == targets).float().mean()}
    is_action = codec.is_action(targets)  # (S,)
    if bool(is_action.any()):  # text batches (VLM co-training / a scene stage) have no action metrics
        action_logits = predictions[is_action][:, codec.first_id : codec.top_id]  # (S_a, n_bins)
        predicted = action_logits.argmax(-1) + codec.first_id  # (S_a,) constrained to action tokens
        truth = targets[is_action]  # (S_a,)
        metrics["action_accuracy"] = (predicted == truth).float().mean()
        metrics["action_l1"] = (codec.decode_torch(predicted) - codec.decode_torch(truth)).abs().mean()
    return metrics


def token_output(predictions: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor,
                 codec: ActionTokenizer) -> HeadOutput:
    """Cross-entropy of the supervised positions' logits (S, V) against their targets (S,), with `token_metrics`."""
    loss = F.cross_entropy(predictions.float(), targets)
    with torch.no_grad():
        metrics = token_metrics(predictions, targets, codec)
    return HeadOutput(loss, logits, metrics)


class TokenActionHead(ActionHead):
    """What both token heads share: the action tokenizer and the EOS id (no parameters of their own)."""

    def __init__(self, action_dim: int, llm: nn.Module | None = None, n_bins: int = 256, tokens: str = "reuse-last",
                 base_vocab_size: int | None = None, chunk_size: int = 1, instruction: str = "openvla") -> None:
        super().__init__(action_dim, chunk_size, instruction)
        self.n_bins, self.tokens = int(n_bins), tokens
        self.action_tokenizer = action_token_codec(llm, self.n_bins, tokens, base_vocab_size)
        tokenizer = getattr(llm, "tokenizer", None)
        self.eos_id = None if tokenizer is None else int(tokenizer.eos_token_id)
        self.pad_id = None if tokenizer is None else int(tokenizer.pad_token_id)

    @property
    def codec(self) -> ActionTokenizer:
        if self.action_tokenizer is None:
            raise ConfigError("the action head was built without the LLM's tokenizer, so it has no token ids")
        return self.action_tokenizer

    def chunk_tokens(self, chunk: np.ndarray, mask: np.ndarray | None) -> tuple[list[int], list[int]]:
        """Token ids of a normalised chunk (K, A), step-major, and their labels (-100 on padded steps)."""
        ids = self.codec.encode(np.asarray(chunk).reshape(self.chunk_shape)).reshape(-1)  # (K·A,)
        real = np.ones(self.chunk_size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)  # (K,)
        labels = np.where(np.repeat(real, self.action_dim), ids, IGNORE_INDEX)  # (K·A,)
        return ids.tolist(), labels.tolist()


@HEADS.register("action-tokens")
class ActionTokenHead(TokenActionHead):
    """Discretised actions as LLM tokens, decoded autoregressively: K·A tokens then EOS per sample."""

    def sequence(self, chunk: np.ndarray | None = None, mask: np.ndarray | None = None) -> ActionSequence:
        if chunk is None:  # inference: decoding starts right after the prompt
            return ActionSequence([], [], [])
        ids, labels = self.chunk_tokens(chunk, mask)
        return ActionSequence(ids + [self.eos_id], labels + [self.eos_id], [False] * (len(ids) + 1))

    def forward(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> HeadOutput:
        """Text and action batches alike: the masked next-token loss (action metrics where there are actions)."""
        return self.score(llm(embeds, batch["attention_mask"]), batch["labels"], batch.get("ids"))

    action_forward = forward

    def score(self, logits: torch.Tensor, labels: torch.Tensor, sample_ids: list[str] | None = None) -> HeadOutput:
        """Loss and metrics of causal-LM logits (B, L, V) against labels (B, L) (-100: no loss)."""
        predictions, targets = supervised_positions(logits, labels, sample_ids)  # (S, V), (S,)
        return token_output(predictions, targets, logits, self.codec)

    def decode(self, llm: nn.Module, embeds: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        codec = self.codec
        steps = self.chunk_size * self.action_dim
        ids = decode_action_tokens(llm.model, embeds, batch["attention_mask"].to(embeds.device), codec.first_id,
                                   codec.top_id, steps)  # (B, K·A)
        return codec.decode_torch(ids).reshape(-1, *self.chunk_shape)  # (B, K, A)
