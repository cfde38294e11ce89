"""LeRobot datasets written by LeRobot's own writer (`LeRobotDataset.create` → `add_frame` → `save_episode` →
`finalize`, from the standalone `lerobot-dataset` package, installed with `--no-deps` as .ci/run does), and the
values written, so tests compare what vlx reads with what went in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SIZE = 64
TASKS = ("pick up the red block", "push the blue block")


@dataclass(frozen=True)
class Written:
    """The dataset directory and, per episode, what was written: frames by camera (T, H, W, 3), state, actions."""

    root: Path
    front: list[np.ndarray]  # video camera
    wrist: list[np.ndarray]  # image camera (PNG in the parquet)
    state: list[np.ndarray]
    actions: list[np.ndarray]
    tasks: list[str]


def smooth_frame(episode: int, step: int) -> np.ndarray:
    """Flat red that brightens 20 levels a step, green by episode, a horizontal blue gradient: lossy video keeps
    it within a few levels, and each step far from its neighbours."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return np.stack([np.full_like(x, 30 + 20 * step), np.full_like(y, 40 + 50 * episode), x * 3],
                    axis=-1).astype(np.uint8)  # (H, W, 3)


def write_lerobot(root: Path, lengths: tuple[int, ...] = (5, 7, 6, 4), seed: int = 0) -> Written:
    """A v3.0 dataset with a video camera `front`, an image camera `wrist`, a 3-D state and 3-D actions."""
    lerobot_dataset = pytest.importorskip("ledataset.datasets.lerobot_dataset",
                                          reason="pip install --no-deps lerobot-dataset (LeRobot's writer)")
    image = {"shape": (SIZE, SIZE, 3), "names": ["height", "width", "channels"]}
    features = {
        "observation.images.front": {"dtype": "video", **image},
        "observation.images.wrist": {"dtype": "image", **image},
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["x", "y", "gripper"]},
        "action": {"dtype": "float32", "shape": (3,), "names": ["dx", "dy", "gripper"]},
    }
    dataset = lerobot_dataset.LeRobotDataset.create("local/vlx-test", fps=10, features=features, root=root,
                                                    use_videos=True)
    rng = np.random.default_rng(seed)
    written = Written(root, [], [], [], [], [])
    for episode, length in enumerate(lengths):
        front = np.stack([smooth_frame(episode, t) for t in range(length)])  # (T, H, W, 3)
        wrist = rng.integers(0, 256, (length, SIZE, SIZE, 3), dtype=np.uint8)
        state = rng.uniform(-1, 1, (length, 3)).astype(np.float32)
        actions = rng.uniform(-1, 1, (length, 3)).astype(np.float32)
        task = TASKS[episode % 2]
        for t in range(length):
            dataset.add_frame({"observation.images.front": front[t], "observation.images.wrist": wrist[t],
                               "observation.state": state[t], "action": actions[t], "task": task})
        dataset.save_episode()
        for field, value in (("front", front), ("wrist", wrist), ("state", state), ("actions", actions),
                             ("tasks", task)):
            getattr(written, field).append(value)
    dataset.finalize()
    return written
