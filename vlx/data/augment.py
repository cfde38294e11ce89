"""Image augmentation for robot data (OpenVLA's), and the matching deterministic crop at inference.

Training: a random resized crop covering `crop_scale` of the image area (aspect ratio 1), resized back
to the input size, then colour jitter (brightness 0.2, contrast and saturation [0.8, 1.2], hue 0.05).
Inference: the centre crop of the same area, resized back — so the policy sees at test time what it saw
on average in training. Both act on PIL images before the vision backbone's own transform; both are
switched by the config node `augment: {crop_scale: 0.9 | null, color_jitter: bool}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image
from torchvision.transforms import v2

from vlx.errors import ConfigError

ImageOp = Callable[[Image.Image], Image.Image]


def crop_scale_of(augment: Mapping[str, Any] | None) -> float | None:
    """The configured crop area fraction (None: no crop), validated."""
    scale = (augment or {}).get("crop_scale")
    if scale is not None and not 0 < float(scale) <= 1:
        raise ConfigError(f"augment.crop_scale={scale}; expected a fraction of the image area in (0, 1] or null")
    return None if scale is None else float(scale)


def center_crop(image: Image.Image, crop_scale: float | None) -> Image.Image:
    """The central square-ish crop covering `crop_scale` of the area, resized back to the image size."""
    if crop_scale is None or crop_scale == 1:
        return image
    width, height = image.size
    side = math.sqrt(crop_scale)
    cropped = v2.functional.center_crop(image, [round(height * side), round(width * side)])
    return cropped.resize((width, height), Image.Resampling.BILINEAR)


def training_augmentation(augment: Mapping[str, Any] | None) -> ImageOp | None:
    """The random augmentation the config asks for (None when it asks for none)."""
    scale = crop_scale_of(augment)
    ops: list[Any] = []
    if scale is not None and scale < 1:
        ops.append(_RandomCrop(scale))
    if (augment or {}).get("color_jitter"):
        ops.append(v2.ColorJitter(brightness=0.2, contrast=(0.8, 1.2), saturation=(0.8, 1.2), hue=0.05))
    return v2.Compose(ops) if ops else None


def inference_preprocess(augment: Mapping[str, Any] | None) -> ImageOp:
    """What inference does to an image before the backbone's transform (the centre crop, if trained with crops)."""
    scale = crop_scale_of(augment)
    return lambda image: center_crop(image, scale)


class _RandomCrop:
    """RandomResizedCrop at a fixed area fraction and aspect ratio 1, back to the input size."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        crop = v2.RandomResizedCrop((height, width), scale=(self.scale, self.scale), ratio=(1.0, 1.0))
        return crop(image)
