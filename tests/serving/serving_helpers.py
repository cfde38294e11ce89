"""Shared pieces of the serving tests: a deterministic policy whose output can be checked exactly, and image builders."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib

import numpy as np
from PIL import Image

from vlx.errors import ConfigError, DataError

SCALES = {"bridge": 1.0, "libero": 2.0}


class ColourPolicy:
    """action = [mean R, mean G, mean B, len(instruction), scale of the unnorm_key].

    The means are exact integer sums divided by the pixel count, so a test can recompute them bit for bit.
    Like a real VLA it raises ConfigError when the unnorm_key is missing but needed, or unknown; special
    instructions make it misbehave on purpose ("!sleep", "!nan", "!short", "!crash", "!data-error").
    """

    action_dim = 5

    def __init__(self, unnorm_keys: tuple[str, ...] = ("bridge", "libero"), sleep_s: float = 0.05) -> None:
        self.unnorm_keys = list(unnorm_keys)
        self.sleep_s = sleep_s
        self.calls: list[tuple[tuple[int, int], str, str | None]] = []
        self.active = self.max_active = 0
        self._lock = threading.Lock()

    def predict_action(self, image: Image.Image, instruction: str, unnorm_key: str | None = None) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return self._predict(image, instruction, unnorm_key)
        finally:
            with self._lock:
                self.active -= 1

    def _predict(self, image: Image.Image, instruction: str, unnorm_key: str | None) -> np.ndarray:
        assert isinstance(image, Image.Image) and image.mode == "RGB", image
        self.calls.append((image.size, instruction, unnorm_key))
        if unnorm_key is None:
            if len(self.unnorm_keys) != 1:
                raise ConfigError(f"unnorm_key is required: this model carries statistics for {', '.join(self.unnorm_keys)}")
            unnorm_key = self.unnorm_keys[0]
        if unnorm_key not in self.unnorm_keys:
            raise ConfigError(f"unknown unnorm_key {unnorm_key!r}")
        if instruction == "!sleep":
            time.sleep(self.sleep_s)
        if instruction == "!crash":
            raise RuntimeError("CUDA out of memory (secret internal detail)")
        if instruction == "!data-error":
            raise DataError("the image is unusable for this model")
        if instruction == "!short":
            return np.zeros(3)
        pixels = np.asarray(image, dtype=np.int64).reshape(-1, 3)
        n = pixels.shape[0]
        action = [int(s) / n for s in pixels.sum(axis=0)] + [float(len(instruction)), SCALES.get(unnorm_key, 3.0)]
        if instruction == "!nan":
            action[0] = float("nan")
        return np.asarray(action, dtype=np.float64)


def expected_action(rgb: np.ndarray, instruction: str, unnorm_key: str = "bridge") -> list[float]:
    """What ColourPolicy returns for an (H, W, 3) uint8 image, computed independently with Python ints."""
    flat = rgb.reshape(-1, 3).tolist()
    n = len(flat)
    return [sum(p[c] for p in flat) / n for c in range(3)] + [float(len(instruction)), SCALES.get(unnorm_key, 3.0)]


def encode(image: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def random_rgb(seed: int = 0, size: tuple[int, int] = (24, 16)) -> np.ndarray:
    """An (H, W, 3) uint8 image, size = (W, H)."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares `width` x `height` RGB pixels (a decompression-bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def bomb_jpeg(width: int, height: int) -> bytes:
    """A real small JPEG with its start-of-frame size patched to `width` x `height`."""
    data = bytearray(encode(Image.fromarray(random_rgb(1, (8, 8))), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def act_body(image_b64: str, instruction: str = "pick up the red block", unnorm_key: str | None = "bridge") -> dict:
    return {"image": image_b64, "instruction": instruction, "unnorm_key": unnorm_key}
