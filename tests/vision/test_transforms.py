"""Tests of image transforms: output shape/dtype, letterbox mean-colour padding (LLaVA's and Prismatic's rules),
centre crop, naive resize, modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TVF
from PIL import Image

from vlx.errors import ConfigError
from vlx.vision.transforms import RESIZE_STRATEGIES, build_image_transform, letterbox, letterbox_symmetric

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
S = 48
RED, BLUE, GREEN = (220, 30, 30), (30, 70, 230), (30, 170, 60)


def _unnormalise(pixels: torch.Tensor) -> torch.Tensor:
    """(3, H, W) normalised → RGB in [0, 1]."""
    return pixels * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]


def _rgb(colour) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.float32) / 255


def _bands(width: int = 60, height: int = 30) -> Image.Image:
    """Left quarter red, middle half blue, right quarter green."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 4, height))
    image.paste(GREEN, (width - width // 4, 0, width, height))
    return image


def _close(pixel: torch.Tensor, colour, atol: float = 0.03) -> bool:
    return torch.allclose(pixel, _rgb(colour), atol=atol)


@pytest.mark.parametrize("strategy", RESIZE_STRATEGIES)
@pytest.mark.parametrize("size", [(60, 30), (30, 60), (48, 48), (200, 17)])
def test_output_shape_and_dtype(strategy, size) -> None:
    out = build_image_transform(strategy, S, MEAN, STD)(Image.new("RGB", size, RED))
    assert out.shape == (3, S, S)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_uniform_image_normalises_to_its_colour_for_every_strategy() -> None:
    for strategy in RESIZE_STRATEGIES:
        out = build_image_transform(strategy, S, MEAN, STD)(Image.new("RGB", (48, 48), RED))
        expected = ((_rgb(RED) - torch.tensor(MEAN)) / torch.tensor(STD))[:, None, None]
        assert torch.allclose(out, expected.expand(3, S, S), atol=1e-4), strategy


def test_letterbox_pads_wide_image_with_mean_colour() -> None:
    out = build_image_transform("letterbox", S, MEAN, STD)(Image.new("RGB", (60, 30), RED))  # (3, 48, 48)
    # 60x30 → 60x60 with 15 rows of padding above and below → 12 rows of 48 each side
    assert out[:, :10, :].abs().max() < 0.02  # padding ~0 after normalisation, in every channel
    assert out[:, -10:, :].abs().max() < 0.02
    pixels = _unnormalise(out)
    for row, col in [(24, 0), (24, 24), (24, 47), (14, 5), (33, 40)]:
        assert _close(pixels[:, row, col], RED), (row, col)  # whole width of the content is kept


def test_letterbox_pads_tall_image_left_and_right() -> None:
    out = build_image_transform("letterbox", S, MEAN, STD)(Image.new("RGB", (30, 60), GREEN))
    assert out[:, :, :10].abs().max() < 0.02
    assert out[:, :, -10:].abs().max() < 0.02
    assert _close(_unnormalise(out)[:, 0, 24], GREEN) and _close(_unnormalise(out)[:, 47, 24], GREEN)


def test_letterbox_helper_centres_and_leaves_squares_alone() -> None:
    fill = (1, 2, 3)
    padded = letterbox(Image.new("RGB", (6, 2), RED), fill)
    assert padded.size == (6, 6)
    assert [padded.getpixel((0, y)) for y in range(6)] == [fill, fill, RED, RED, fill, fill]
    square = Image.new("RGB", (5, 5), RED)
    assert letterbox(square, fill) is square


def test_resize_crop_keeps_the_centre_and_drops_the_sides() -> None:
    pixels = _unnormalise(build_image_transform("resize-crop", S, MEAN, STD)(_bands()))
    # shorter side 30 → 48, width 60 → 96; the centre 48 columns are exactly the blue middle half
    for row, col in [(0, 24), (24, 24), (47, 24), (24, 3), (24, 44)]:
        assert _close(pixels[:, row, col], BLUE), (row, col)
    interior = pixels[:, :, 2:-2]
    assert interior[0].max() < 0.3  # no red
    assert interior[1].max() < 0.45  # no green


def test_resize_naive_keeps_the_whole_content() -> None:
    pixels = _unnormalise(build_image_transform("resize-naive", S, MEAN, STD)(_bands()))
    # 60 → 48 columns: red in 0..11, blue in 12..35, green in 36..47 (up to bicubic blur at the borders)
    for row in (0, 24, 47):
        assert _close(pixels[:, row, 2], RED), row
        assert _close(pixels[:, row, 24], BLUE), row
        assert _close(pixels[:, row, 45], GREEN), row


def test_letterbox_keeps_left_and_right_edges_of_wide_image() -> None:
    pixels = _unnormalise(build_image_transform("letterbox", S, MEAN, STD)(_bands()))
    assert _close(pixels[:, 24, 2], RED) and _close(pixels[:, 24, 24], BLUE) and _close(pixels[:, 24, 45], GREEN)


def test_unknown_strategy_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        build_image_transform("squash", S, MEAN, STD)
    message = str(info.value)
    assert "'squash'" in message
    assert "letterbox, letterbox-prismatic, resize-naive, resize-crop" in message


@pytest.mark.parametrize("strategy", RESIZE_STRATEGIES)
@pytest.mark.parametrize(("mode", "colour", "rgb"), [("L", 77, (77, 77, 77)),
                                                     ("RGBA", (10, 200, 30, 255), (10, 200, 30)),
                                                     ("LA", (120, 255), (120, 120, 120))])
def test_grayscale_and_alpha_images_give_three_channels(strategy, mode, colour, rgb) -> None:
    out = build_image_transform(strategy, S, MEAN, STD)(Image.new(mode, (60, 30), colour))
    assert out.shape == (3, S, S) and out.dtype == torch.float32
    assert _close(_unnormalise(out)[:, 24, 24], rgb, atol=2e-3)


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _prismatic_letterbox(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Prismatic's `LetterboxPad` (prismatic/models/backbones/vision/base_vision.py): `int((max - side) / 2)` on both
    sides through torchvision's `pad`, so an odd difference leaves the result one pixel short of square."""
    (w, h), max_wh = image.size, max(image.size)
    horizontal, vertical = int((max_wh - w) / 2), int((max_wh - h) / 2)
    return TVF.pad(image, [horizontal, vertical, horizontal, vertical], fill=fill, padding_mode="constant")


@pytest.mark.parametrize("size", [(61, 30), (30, 61), (64, 64), (7, 2), (2, 9), (200, 17)])
def test_prismatic_letterbox_is_prismatics_symmetric_pad(size) -> None:
    fill = tuple(int(m * 255) for m in MEAN)
    image = _noise(*size)
    expected = _prismatic_letterbox(image, fill)
    ours = letterbox_symmetric(image, fill)
    assert ours.size == expected.size
    assert np.array_equal(np.asarray(ours), np.asarray(expected))


@pytest.mark.parametrize("size", [(61, 30), (30, 61), (200, 17)])
def test_prismatic_letterbox_transform_equals_prismatics_pipeline(size) -> None:
    """Prismatic: LetterboxPad(mean fill) then timm's resize-shorter-side (bicubic), centre crop, normalise."""
    fill = tuple(int(m * 255) for m in MEAN)
    reference = T.Compose([lambda image: _prismatic_letterbox(image, fill),
                           T.Resize(S, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(S), T.ToTensor(),
                           T.Normalize(MEAN, STD)])
    image = _noise(*size, seed=1)
    ours = build_image_transform("letterbox-prismatic", S, MEAN, STD)(image)
    # the same pixels (the geometry is exact, checked in uint8), scaled by x * (1/255) where ToTensor divides: 1 ulp
    geometry = T.Compose(reference.transforms[:3])(image)
    assert torch.equal(((_unnormalise(ours) * 255).round()).to(torch.uint8), TVF.pil_to_tensor(geometry))
    torch.testing.assert_close(ours, reference(image), rtol=0, atol=1e-6)
    llava = build_image_transform("letterbox", S, MEAN, STD)(image)  # expand2square: the extra row goes after
    assert not torch.equal(ours, llava)
