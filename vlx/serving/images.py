"""Decoding the image of a policy request: strict base64 → PNG or JPEG only → size-checked RGB PIL image.

Everything here treats its input as hostile. The base64 text must use the standard alphabet with
correct padding and nothing else (no whitespace, no data-URL prefix). The bytes must start with the PNG
or JPEG signature and are opened only by that one Pillow plugin. The width and height are read from
the file header *before* any pixel is decoded, so a small file that declares a huge image (a
decompression bomb) is refused without allocating it; Pillow's own size check is a second line. The
image is decoded (`load()`) inside a try, and every failure becomes an `ImageError` (HTTP 400).
`array_to_image` does the same for the raw uint8 arrays of the OpenVLA and openpi protocols: (H, W),
(H, W, 1), (H, W, 3) or (H, W, 4), channels last, under the same size limits.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (they carry the image size): C0-CF except DHT (C4), JPG (C8), DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class ImageError(ValueError):
    """The request's image is not a valid, acceptably sized PNG or JPEG (the message says why)."""


def decode_base64(text: str, max_bytes: int, what: str = "image") -> bytes:
    """Strictly decode standard, padded base64 (no whitespace or other characters); `what` names it in errors."""
    if not text and what == "image":
        raise ImageError("image is empty; expected base64-encoded PNG or JPEG bytes")
    if len(text) % 4:
        raise ImageError(f"{what} is not valid base64 (its length is not a multiple of 4)")
    if len(text) // 4 * 3 > max_bytes + 2:
        raise ImageError(f"{what} is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{what} is not valid base64 (standard alphabet A-Z a-z 0-9 + /, '=' padding)") from None


def _declared_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) from the PNG IHDR or the first JPEG start-of-frame segment; None if not found."""
    if kind == "PNG":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _SOF_MARKERS:
            if i + 9 > len(data):
                return None
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _check_size(width: int, height: int, max_pixels: int, max_side: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"image declares an empty size {width}x{height}")
    if max(width, height) > max_side:
        raise ImageError(f"image is {width}x{height}; the largest side allowed is {max_side} pixels")
    if width * height > max_pixels:
        raise ImageError(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any PNG/JPEG mode: grayscale is replicated, alpha is dropped, 16-bit is scaled to 8-bit."""
    if image.mode == "RGB":
        return image
    if image.mode in ("P", "PA"):  # via RGBA, which applies a transparency entry without a warning
        return image.convert("RGBA").convert("RGB")
    if image.mode.startswith("I"):  # 16-bit (I;16, I;16B) or 32-bit grayscale: keep the high byte
        pixels = np.asarray(image).astype(np.int64)
        if image.mode == "I":
            pixels = np.clip(pixels, 0, 65535)
        image = Image.fromarray((pixels >> 8).astype(np.uint8), mode="L")
    return image.convert("RGB")


def decode_image(text: str, *, max_bytes: int, max_pixels: int, max_side: int) -> Image.Image:
    """The RGB image encoded in `text` (base64 PNG or JPEG), or an ImageError saying what is wrong."""
    data = decode_base64(text, max_bytes)
    if data.startswith(PNG_MAGIC):
        kind = "PNG"
    elif data.startswith(JPEG_MAGIC):
        kind = "JPEG"
    else:
        raise ImageError("image is not a PNG or JPEG (its bytes do not start with either signature)")
    declared = _declared_size(data, kind)
    if declared is None:
        raise ImageError(f"image is not a readable {kind}: no image size in its header")
    _check_size(*declared, max_pixels, max_side)
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            _check_size(*image.size, max_pixels, max_side)  # what Pillow will actually allocate
            image.load()
            return to_rgb(image).copy()
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"image is larger than {max_pixels} pixels") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"image is not a valid {kind}: its header is corrupt") from None
    except Exception as exc:  # noqa: BLE001 — any decoder failure on untrusted bytes is the client's bad image
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ImageError(f"image is not a valid {kind}: {reason}") from None


def array_to_image(array: np.ndarray, *, max_pixels: int, max_side: int) -> Image.Image:
    """The RGB image of a uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), or an ImageError saying why not."""
    shape = tuple(array.shape)
    if array.dtype != np.uint8:
        hint = " (convert a float image in [0, 1] with (x * 255).astype(np.uint8))" if array.dtype.kind == "f" else ""
        raise ImageError(f"image must be a uint8 array, not {array.dtype}{hint}")
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        raise ImageError(f"image has shape {shape}: channels must come last, (H, W, 3)")
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4))):
        raise ImageError(f"image has shape {shape}; expected (H, W, 3), (H, W, 4), (H, W, 1) or (H, W)")
    _check_size(shape[1], shape[0], max_pixels, max_side)
    if len(shape) == 3 and shape[2] == 1:
        array = array[..., 0]
    # an owned C-order copy (the array may view a read-only request buffer); uint8 (H, W) / (H, W, 3) / (H, W, 4)
    # become L / RGB / RGBA
    return to_rgb(Image.fromarray(np.array(array, order="C")))
