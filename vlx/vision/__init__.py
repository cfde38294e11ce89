"""Vision backbones: the VisionBackbone contract, image transforms and the registered encoders."""

from vlx.vision import fused, hf_clip, presets, timm_vit  # noqa: F401  (imports register the backbones)
from vlx.vision.base import VisionBackbone

__all__ = ["VisionBackbone"]
