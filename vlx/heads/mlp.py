"""The MLPs that turn hidden states into continuous actions (registry `ACTION_MLPS`).

`mlp-resnet` is OpenVLA-OFT's `MLPResNet` (`prismatic/models/action_heads.py`): LayerNorm → Linear(in, H) →
ReLU → `num_blocks` pre-norm residual blocks [LayerNorm, Linear(H, H), ReLU] → LayerNorm → Linear(H, out),
with OFT's module names (`layer_norm1`, `fc1`, `mlp_resnet_blocks.N.ffn`, `layer_norm2`, `fc2`), so OFT's
`action_head--*_checkpoint.pt` state dicts map one-to-one (prefix `model.` there).
"""

from __future__ import annotations

import torch
from torch import nn

from vlx.registry import ACTION_MLPS


class MLPResNetBlock(nn.Module):
    """x + ReLU(Linear(LayerNorm(x)))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)  # (..., H)


@ACTION_MLPS.register("mlp-resnet")
class MLPResNet(nn.Module):
    """OFT's action MLP; `hidden_dim` defaults to the LLM width (OFT: 4096 for Llama-2-7B)."""

    def __init__(self, in_dim: int, out_dim: int, llm_dim: int, hidden_dim: int | None = None,
                 num_blocks: int = 2) -> None:
        super().__init__()
        hidden = int(hidden_dim or llm_dim)
        self.layer_norm1 = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden) for _ in range(int(num_blocks)))
        self.layer_norm2 = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))  # (..., in) -> (..., H)
        for block in self.mlp_resnet_blocks:
            x = block(x)  # (..., H)
        return self.fc2(self.layer_norm2(x))  # (..., out)
