"""Fused vision backbones (Prismatic's DINOv2 + SigLIP): several encoders, one patch grid.

Each member sees the image through its own transform (its own normalisation); the pixel tensors are
stacked on the channel axis, (3·k, S, S), so batching and the model's splice stay unchanged, and split
again in `forward`. Patch features are concatenated per patch on the channel axis, e.g. 256 tokens ×
(1024 + 1152 = 2176) for dinosiglip-224px. Members must agree on image size and patch count.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch import nn

from vlx.errors import ConfigError
from vlx.registry import VISION_BACKBONES
from vlx.vision.base import VisionBackbone
from vlx.vision.transforms import ImageTransform


@VISION_BACKBONES.register("fused")
class FusedVisionBackbone(VisionBackbone):
    """Concatenate the patch features of `members` (each a vision config node)."""

    def __init__(self, members: list[dict[str, Any]], load_weights: bool = True) -> None:
        super().__init__()
        if len(members) < 2:
            raise ConfigError("vision.members of a 'fused' backbone needs at least two backbones")
        self.members = nn.ModuleList(
            VISION_BACKBONES.build(member, f"vision.members[{i}]", load_weights=load_weights)
            for i, member in enumerate(members)
        )
        described = ", ".join(
            f"members[{i}]: {m.image_size} px → {m.num_patches} patches" for i, m in enumerate(self.members)
        )
        if len({m.num_patches for m in self.members}) > 1 or len({m.image_size for m in self.members}) > 1:
            raise ConfigError(f"fused vision members must agree on image size and patch count; got {described}")
        self.image_size = self.members[0].image_size
        self.num_patches = self.members[0].num_patches
        self.embed_dim = sum(m.embed_dim for m in self.members)

    @property
    def image_transform(self) -> ImageTransform:
        transforms = [m.image_transform for m in self.members]

        def transform(image: Image.Image) -> torch.Tensor:
            return torch.cat([t(image) for t in transforms], dim=0)  # (3·k, S, S)

        return transform

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        chunks = pixel_values.split(3, dim=1)  # k × (B, 3, S, S)
        return torch.cat([m(c) for m, c in zip(self.members, chunks, strict=True)], dim=-1)  # (B, N, ΣDv)

    def spec(self) -> dict[str, Any]:
        return {"name": "fused", "members": [m.spec() for m in self.members]}
