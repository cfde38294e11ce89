"""The VisionBackbone contract shared by every image encoder in vlx.

A backbone maps pixels to patch features `(B, N, Dv)` — no CLS or register tokens — taken from a
configurable layer, and knows how to turn a PIL image into the pixels it expects (`image_transform`).
`spec()` returns the registry arguments that rebuild the same architecture without any weights, which
is what a checkpoint stores so that `vlx.load` never needs the original source.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from vlx.vision.transforms import ImageTransform


class VisionBackbone(nn.Module, ABC):
    """Base class: subclasses set `embed_dim`, `num_patches` and implement the methods below."""

    embed_dim: int
    num_patches: int

    @property
    @abstractmethod
    def image_transform(self) -> ImageTransform:
        """PIL image → pixel tensor for `forward`."""

    @abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels → (B, N, Dv) patch features."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """Registry arguments (including `name`) that rebuild this architecture with no weights."""
