"""Image transforms: PIL image → normalised (3, S, S) tensor, with LLaVA's and Prismatic's resize strategies.

`letterbox` pads to a square with the normalisation mean colour and then resizes (LLaVA-1.5's `pad`,
`expand2square`: an odd difference puts the extra row or column after the image); `letterbox-prismatic`
is Prismatic's and OpenVLA's `LetterboxPad`: `int((max - side) / 2)` on both sides, so an odd difference
leaves a (max - 1) x max image that the shorter-side resize and centre crop then finish (each tower pads
with its own mean, as in Prismatic's training transform); `resize-naive` warps the image to a square
(Prismatic's prism models), `resize-crop` resizes the shorter side and centre-crops. Every image is
converted to RGB first, so grayscale and RGBA files work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from vlx.errors import ConfigError, DataError

RESIZE_STRATEGIES = ("letterbox", "letterbox-prismatic", "resize-naive", "resize-crop")
ImageTransform = Callable[[Image.Image], torch.Tensor]


def as_rgb_image(image: Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from a PIL image or a uint8 array (H, W), (H, W, 3) or (H, W, 4)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise DataError(f"an image array must be uint8 (H, W), (H, W, 3) or (H, W, 4); "
                            f"got {image.dtype} {image.shape}")
        image = Image.fromarray(image.squeeze(2) if image.ndim == 3 and image.shape[2] == 1 else image)
    return image if image.mode == "RGB" else image.convert("RGB")


def letterbox(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad `image` to a centred square with the colour `fill`."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def letterbox_symmetric(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad `image` by `int((max - side) / 2)` on both sides of its shorter axis with `fill` (Prismatic's rule)."""
    width, height = image.size
    side = max(width, height)
    pad_x, pad_y = (side - width) // 2, (side - height) // 2
    canvas = Image.new("RGB", (width + 2 * pad_x, height + 2 * pad_y), fill)
    canvas.paste(image, (pad_x, pad_y))
    return canvas


def build_image_transform(
    strategy: str, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> ImageTransform:
    """A callable mapping a PIL image to a (3, image_size, image_size) float tensor."""
    if strategy not in RESIZE_STRATEGIES:
        raise ConfigError(f"unknown image_resize {strategy!r}; expected one of {', '.join(RESIZE_STRATEGIES)}")
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    bicubic = v2.InterpolationMode.BICUBIC
    if strategy == "resize-naive":
        geometry = [v2.Resize((image_size, image_size), interpolation=bicubic, antialias=True)]
    else:  # the letterboxes pad first, then all take the shorter-side resize + centre crop
        geometry = [v2.Resize(image_size, interpolation=bicubic, antialias=True), v2.CenterCrop(image_size)]
    pipeline = v2.Compose(geometry + to_tensor)
    fill = tuple(int(m * 255) for m in mean)

    def transform(image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        if strategy == "letterbox":
            image = letterbox(image, fill)  # type: ignore[arg-type]
        elif strategy == "letterbox-prismatic":
            image = letterbox_symmetric(image, fill)  # type: ignore[arg-type]
        return pipeline(image)  # (3, S, S)

    return transform
