"""Builders for the named vision backbones of `vlx.vision_preset_table` (Prismatic's timm ids and fused pairs).

Each name is a registry entry (`vision.name=dinov2-vit-l`, or the config group `vision=dinov2-vit-l`) that builds
a `timm-vit` or `fused` backbone with the published settings; the options (`pretrained`, `weights_file`,
`feature_layer`, `image_resize`) and their defaults are the table's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlx.registry import VISION_BACKBONES
from vlx.vision.fused import FusedVisionBackbone
from vlx.vision.timm_vit import TimmViT
from vlx.vision_preset_table import FUSED_OPTIONS, FUSED_PRESETS, TIMM_OPTIONS, TIMM_PRESETS


def timm_preset(model_id: str, image_size: int, model_kwargs: dict[str, Any]) -> Callable[..., TimmViT]:
    """A factory for one named timm backbone."""

    def build(
        pretrained: bool = TIMM_OPTIONS["pretrained"], weights_file: str | None = TIMM_OPTIONS["weights_file"],
        feature_layer: int = TIMM_OPTIONS["feature_layer"], image_resize: str = TIMM_OPTIONS["image_resize"],
        load_weights: bool = True,
    ) -> TimmViT:
        return TimmViT(model_id, image_size, pretrained, weights_file, feature_layer, image_resize,
                       dict(model_kwargs), load_weights)

    return build


def fused_preset(members: tuple[str, ...]) -> Callable[..., FusedVisionBackbone]:
    """A factory for one named fused backbone; `weights_files` gives each member's local weights."""

    def build(
        pretrained: bool = FUSED_OPTIONS["pretrained"], weights_files: list[str | None] | None = FUSED_OPTIONS[
            "weights_files"], image_resize: str = FUSED_OPTIONS["image_resize"], load_weights: bool = True,
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
