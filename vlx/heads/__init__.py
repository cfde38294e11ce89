"""Heads: turn the LLM's outputs into a loss, metrics and outputs — text, or chunks of actions (VLAs).

Text (`text`); action tokens decoded autoregressively (`action-tokens`, OpenVLA) or in one pass
(`action-tokens-parallel`, OpenVLA-OFT); continuous chunks by L1 regression (`l1-regression`, OpenVLA-OFT) or
by flow matching with an action expert (`flow-matching`, pi0). The MLPs of regression heads have a registry
of their own (`mlp-resnet`).
"""

from vlx.heads import action, flow, l1, mlp, parallel, text  # noqa: F401  (import registers the heads)
from vlx.heads.base import ActionHead, HeadOutput

__all__ = ["ActionHead", "HeadOutput"]
