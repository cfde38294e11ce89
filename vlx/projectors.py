"""Projectors: map vision features (B, N, Dv) to LLM-width visual tokens (B, N, Dl).

`linear` is LLaVA-1's projector; `mlp` is LLaVA-1.5's `mlp2x_gelu` (Linear-GELU-Linear); `fused-mlp` is
Prismatic's three-layer projector for fused backbones. `linear`/`mlp` layer names follow transformers'
`LlavaMultiModalProjector` (`linear_1`, `linear_2`) so weights map one-to-one.
"""

from __future__ import annotations

import torch
from torch import nn

from vlx.registry import PROJECTORS


@PROJECTORS.register("linear")
class LinearProjector(nn.Module):
    """One Linear(Dv, Dl)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_1(features)  # (B, N, Dv) -> (B, N, Dl)


@PROJECTORS.register("mlp")
class MLPProjector(nn.Module):
    """Linear(Dv, H) → GELU → Linear(H, Dl), with H = Dl unless `hidden_dim` is given."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        hidden = hidden_dim or out_dim
        self.linear_1 = nn.Linear(in_dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden, out_dim, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))  # (B, N, Dv) -> (B, N, Dl)


@PROJECTORS.register("fused-mlp")
class FusedMLPProjector(nn.Module):
    """Prismatic's fused-gelu-mlp: Linear(Dv, 4Dv) → GELU → Linear(4Dv, Dl) → GELU → Linear(Dl, Dl).

    Layer names `fc1..fc3` follow Prismatic/OpenVLA checkpoints (`projector.fc1`, ...).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, 4 * in_dim, bias=bias)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(4 * in_dim, out_dim, bias=bias)
        self.act_fn2 = nn.GELU()
        self.fc3 = nn.Linear(out_dim, out_dim, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(features)))))  # (B, N, Dv) -> (B, N, Dl)
