"""The action-token head (OpenVLA): the LLM's own LM head predicts one token per action dimension.

Labels cover the action tokens and the closing EOS (the dataset builds them); the loss is the same
masked next-token cross-entropy as the text head's. Metrics are computed on the action positions only:
`action_accuracy` (argmax among the action tokens equals the label) and `action_l1` (mean absolute
error of the decoded bin centres, in normalised [-1, 1] units). Token ids come from the base vocabulary's
last `n_bins` ids (`tokens: reuse-last`, OpenVLA's choice) or from `n_bins` new tokens
(`tokens: new`, for small vocabularies whose last ids are real words).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlx.errors import ConfigError
from vlx.heads.action_tokenizer import ActionTokenizer
from vlx.heads.text import HeadOutput, supervised_positions
from vlx.registry import HEADS

TOKEN_SOURCES = ("reuse-last", "new")
VLA_QUESTION = "What action should the robot take to {instruction}?"


def vla_question(instruction: str) -> str:
    """OpenVLA's question for an instruction (lower-cased, trailing punctuation dropped)."""
    return VLA_QUESTION.format(instruction=instruction.strip().rstrip(".!?").lower())


def new_action_tokens(n_bins: int) -> list[str]:
    """Names of the tokens added by `tokens: new`."""
    return [f"<act_{index}>" for index in range(n_bins)]


@HEADS.register("action-tokens")
class ActionTokenHead(nn.Module):
    """Discretised actions as LLM tokens; `action_dim` tokens then EOS per sample (no parameters)."""

    def __init__(
        self, action_dim: int, llm: nn.Module | None = None, n_bins: int = 256, tokens: str = "reuse-last",
        base_vocab_size: int | None = None,
    ) -> None:
        super().__init__()
        if tokens not in TOKEN_SOURCES:
            raise ConfigError(f"head.tokens={tokens!r}; expected one of {', '.join(TOKEN_SOURCES)}")
        if int(action_dim) < 1:
            raise ConfigError(f"head.action_dim={action_dim}; expected a positive number of action dimensions")
        self.action_dim, self.n_bins, self.tokens = int(action_dim), int(n_bins), tokens
        tokenizer = getattr(llm, "tokenizer", None)
        self.action_tokenizer: ActionTokenizer | None = None
        if tokens == "new" and tokenizer is not None:
            ids = llm.add_tokens(new_action_tokens(self.n_bins))  # type: ignore[union-attr]
            if ids != list(range(ids[0], ids[0] + self.n_bins)):
                raise ConfigError("the added action tokens did not get consecutive ids")
            self.action_tokenizer = ActionTokenizer(ids[-1] + 1, self.n_bins)
        elif tokens == "reuse-last" and (tokenizer is not None or base_vocab_size is not None):
            top = int(base_vocab_size if base_vocab_size is not None else tokenizer.vocab_size)
            if tokenizer is not None and base_vocab_size is not None and base_vocab_size != tokenizer.vocab_size:
                raise ConfigError(f"head.base_vocab_size={base_vocab_size}, but the tokenizer's base vocabulary "
                                  f"has {tokenizer.vocab_size} ids")
            self.action_tokenizer = ActionTokenizer(top, self.n_bins)
        # else: built without a tokenizer (sizing on the meta device); there is nothing to decode with.

    @property
    def tokenizer(self) -> ActionTokenizer:
        if self.action_tokenizer is None:
            raise ConfigError("the action head was built without the LLM's tokenizer, so it has no token ids")
        return self.action_tokenizer

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, sample_ids: list[str] | None = None) -> HeadOutput:
        predictions, targets = supervised_positions(logits, labels, sample_ids)  # (S, V), (S,)
        loss = F.cross_entropy(predictions.float(), targets)
        codec = self.tokenizer
        is_action = codec.is_action(targets)  # (S,)
        with torch.no_grad():
            metrics = {"token_accuracy": (predictions.argmax(-1) == targets).float().mean()}
            if bool(is_action.any()):  # text batches (VLM co-training / a scene stage) have no action metrics
                action_logits = predictions[is_action][:, codec.first_id : codec.top_id]  # (S_a, n_bins)
                predicted = action_logits.argmax(-1) + codec.first_id  # (S_a,) constrained to action tokens
                truth = targets[is_action]  # (S_a,)
                metrics["action_accuracy"] = (predicted == truth).float().mean()
                metrics["action_l1"] = (codec.decode_torch(predicted) - codec.decode_torch(truth)).abs().mean()
        return HeadOutput(loss, logits, metrics)
