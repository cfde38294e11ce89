"""Heads: turn LLM logits into a loss, metrics and outputs (text; actions in the OpenVLA family)."""

from vlx.heads import action, text  # noqa: F401  (import registers the heads)
from vlx.heads.text import HeadOutput

__all__ = ["HeadOutput"]
