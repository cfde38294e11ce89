"""Heads: turn LLM logits into a loss, metrics and outputs (text; actions in the OpenVLA family)."""

from vlx.heads import text  # noqa: F401  (import registers the head)
from vlx.heads.text import HeadOutput

__all__ = ["HeadOutput"]
