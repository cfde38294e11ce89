"""The named vision backbones' table (Prismatic's choices): timm ids, image sizes, fused pairs, and the options
every preset takes with their defaults; outside the `vlx.vision` package, which imports torch.

It is the one source of the presets' settings: `vlx.vision.presets` registers a builder for each name from it,
and `vlx.config` puts one Hydra option per name into the `vision` group from it (`vision=dinov2-vit-l`, then
`vision.weights_file=/local/file` and the other options are overridable keys), so no YAML file repeats them.
OpenAI CLIP weights expect `quick_gelu` activations, which timm's plain `vit_*_clip_*` definitions do not use, so
those presets set it.
"""

from __future__ import annotations

from typing import Any

QUICK_GELU = {"act_layer": "quick_gelu"}
TIMM_PRESETS: dict[str, tuple[str, int, dict[str, Any]]] = {  # name: (timm id, image size, model kwargs)
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
FUSED_PRESETS: dict[str, tuple[str, str]] = {  # name: the members, in feature order
    "dinosiglip-224px": ("dinov2-vit-l", "siglip-vit-so400m"),
    "dinosiglip-384px": ("dinov2-vit-l-384px", "siglip-vit-so400m-384px"),
    "dinoclip-336px": ("dinov2-vit-l-336px", "clip-vit-l-336px"),
}
# A preset's options: `weights_file` (a fused preset: `weights_files`, one per member) is a local weights file
# timm loads when `pretrained` is true (offline machines); `feature_layer` -2 is the penultimate block's output.
TIMM_OPTIONS: dict[str, Any] = {"pretrained": True, "weights_file": None, "feature_layer": -2,
                                "image_resize": "resize-naive"}
FUSED_OPTIONS: dict[str, Any] = {"pretrained": True, "weights_files": None, "image_resize": "resize-naive"}


def preset_configs() -> dict[str, dict[str, Any]]:
    """name -> the `vision` node selecting that preset with its default options."""
    timm = {name: {"name": name, **TIMM_OPTIONS} for name in TIMM_PRESETS}
    return {**timm, **{name: {"name": name, **FUSED_OPTIONS} for name in FUSED_PRESETS}}
