"""Rollout videos: compose one frame per step (fixed scene view | upscaled policy camera | time bar) and
write the frames as an animated GIF with PIL.

The time bar under the two views grows with the step index, so no two frames of an episode are equal
(PIL merges identical consecutive GIF frames, which would make frame counts lie about episode lengths).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

BAR_HEIGHT = 4
BAR_COLOUR = (255, 160, 0)
BACKGROUND = (0, 0, 0)


def compose_frame(scene: np.ndarray, camera: np.ndarray, progress: float) -> np.ndarray:
    """One video frame (S + BAR_HEIGHT, 2S, 3) uint8 from `scene` (S, S, 3) and `camera` (H, W, 3).

    The camera image is upscaled (nearest neighbour) to the scene's size; `progress` in [0, 1] sets the
    length of the time bar.
    """
    size = scene.shape[0]
    big = np.asarray(Image.fromarray(camera).resize((size, size), Image.NEAREST))  # (S, S, 3)
    bar = np.empty((BAR_HEIGHT, 2 * size, 3), dtype=np.uint8)  # (BAR_HEIGHT, 2S, 3)
    bar[:] = BACKGROUND
    bar[:, : round(min(max(progress, 0.0), 1.0) * 2 * size)] = BAR_COLOUR
    return np.concatenate([np.concatenate([scene, big], axis=1), bar], axis=0)


def write_gif(frames: list[np.ndarray], path: Path, fps: float = 5.0) -> Path:
    """Write `frames` (each (H, W, 3) uint8) as a looping GIF at `path`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path
