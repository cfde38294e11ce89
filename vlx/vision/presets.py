"""Named vision backbones with Prismatic's choices: timm ids, image sizes and fused pairs.

Each name is a registry entry (`vision.name=dinov2-vit-l`, or the config group `vision=dinov2-vit-l`)
that builds a `timm-vit` or `fused` backbone with the published settings; `pretrained`, `weights_file`,
`feature_layer` and `image_resize` stay overridable. OpenAI CLIP weights expect `quick_gelu`
activations, which timm's plain `vit_*_clip_*` definitions do not use, so those presets set it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlx.registry import VISION_BACKBONES
from vlx.vision.fused import FusedVisionBackbone
from vlx.vision.timm_vit import TimmViT

QUICK_GELU = {"act_layer": "quick_gelu"}
TIMM_PRESETS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "clip-vit-l": ("vit_large_patch14_clip_224.openai", 224, QUICK_GELU),
    "clip-vit-l-336px": ("vit_large_patch14_clip_336.openai", 336, QUICK_GELU),
    "siglip-vit-so400m": ("vit_so400m_patch14_siglip_224", 224, {}),
    "siglip-vit-so400m-384px": ("vit_so400m_patch14_siglip_384", 384, {}),
    "siglip-vit-b16-224px": ("vit_base_patch16_siglip_224", 224, {}),
    "dinov2-vit-l": ("vit_large_patch14_reg4_dinov2.lvd142m", 224, {}),
    "dinov2-vit-l-336px": ("vit_large_patch14_reg4_dinov2.lvd142m", 336, {}),
    "dinov2-vit-l-384px": ("vit_large_patch14_reg4_dinov2.lvd142m", 384, {}),
    "in1k-vit-l": ("vit_large_patch16_224.augreg_in21k_ft_in1k", 224, {}),
}
FUSED_PRESETS: dict[str, tuple[str, str]] = {
    "dinosiglip-224px": ("dinov2-vit-l", "siglip-vit-so400m"),
    "dinosiglip-384px": ("dinov2-vit-l-384px", "siglip-vit-so400m-384px"),
    "dinoclip-336px": ("dinov2-vit-l-336px", "clip-vit-l-336px"),
}


def timm_preset(model_id: str, image_size: int, model_kwargs: dict[str, Any]) -> Callable[..., TimmViT]:
    """A factory for one named timm backbone."""

    def build(
        pretrained: bool = True, weights_file: str | None = None, feature_layer: int = -2,
        image_resize: str = "resize-naive", load_weights: bool = True,
    ) -> TimmViT:
        return TimmViT(model_id, image_size, pretrained, weights_file, feature_layer, image_resize,
                       dict(model_kwargs), load_weights)

    return build


def fused_preset(members: tuple[str, ...]) -> Callable[..., FusedVisionBackbone]:
    """A factory for one named fused backbone; `weights_files` gives each member's local weights."""

    def build(
        pretrained: bool = True, weights_files: list[str | None] | None = None, image_resize: str = "resize-naive",
        load_weights: bool = True,
    ) -> FusedVisionBackbone:
        files = list(weights_files or [None] * len(members))
        nodes = [
            {"name": name, "pretrained": pretrained, "weights_file": file, "image_resize": image_resize}
            for name, file in zip(members, files, strict=True)
        ]
        return FusedVisionBackbone(nodes, load_weights)

    return build


for _name, (_model_id, _size, _kwargs) in TIMM_PRESETS.items():
    VISION_BACKBONES.register(_name)(timm_preset(_model_id, _size, _kwargs))
for _name, _members in FUSED_PRESETS.items():
    VISION_BACKBONES.register(_name)(fused_preset(_members))
