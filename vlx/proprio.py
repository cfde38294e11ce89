"""Proprio projectors: the robot's normalised state (B, P) → one LLM-width token (B, D) (registry `PROPRIO_PROJECTORS`).

`mlp` is OpenVLA-OFT's `ProprioProjector` (`prismatic/models/projectors.py`): Linear(P, D) → GELU → Linear(D, D),
with OFT's module names (`fc1`, `act_fn1`, `fc2`), so its `proprio_projector--*_checkpoint.pt` maps one-to-one.
The token goes right after the camera patches (see `VisionLanguageModel.embed`).
"""

from __future__ import annotations

import torch
from torch import nn

from vlx.registry import PROPRIO_PROJECTORS


@PROPRIO_PROJECTORS.register("mlp")
class ProprioMLP(nn.Module):
    """Linear(in_dim, D) → GELU → Linear(D, D)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.fc1 = nn.Linear(self.in_dim, out_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(state)))  # (B, P) -> (B, D)
