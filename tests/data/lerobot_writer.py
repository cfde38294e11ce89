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


def write_v21(written: Written, root: Path) -> Path:
    """The dataset of `written` in LeRobot's v2.1 layout — one data parquet and one video per episode,
    `meta/episodes.jsonl`, `meta/tasks.jsonl`, `meta/episodes_stats.jsonl` — as LeRobot's v2.1 → v3.0 converter
    reads it (lerobot-dataset has no v2.1 writer). Videos are encoded by vlx's converter with LeRobot's settings."""
    import json

    import pyarrow.parquet as pq

    from vlx.data.lerobot_convert import encode_video, feature_stats

    source = json.loads((written.root / "meta" / "info.json").read_text())
    table = pq.read_table(next((written.root / "data").rglob("*.parquet")))
    owners = table.column("episode_index").to_numpy()
    tasks = list(dict.fromkeys(written.tasks))
    for episode in range(len(written.actions)):
        rows = table.take(np.flatnonzero(owners == episode))
        path = root / "data" / "chunk-000" / f"episode_{episode:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, path)
        encode_video(written.front[episode], root / "videos" / "chunk-000" / "observation.images.front" /
                     f"episode_{episode:06d}.mp4", int(source["fps"]), "libsvtav1")
    lines = {
        "episodes": [{"episode_index": e, "tasks": [t], "length": len(a)}
                     for e, (t, a) in enumerate(zip(written.tasks, written.actions, strict=True))],
        "tasks": [{"task_index": i, "task": t} for i, t in enumerate(tasks)],
        "episodes_stats": [{"episode_index": e, "stats": {"action": feature_stats(a), "observation.state":
                                                          feature_stats(s)}}
                           for e, (a, s) in enumerate(zip(written.actions, written.state, strict=True))],
    }
    (root / "meta").mkdir(parents=True, exist_ok=True)
    for name, entries in lines.items():
        (root / "meta" / f"{name}.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    info = {key: value for key, value in source.items()
            if key not in ("data_files_size_in_mb", "video_files_size_in_mb")}
    info.update(codebase_version="v2.1", total_chunks=1, total_videos=len(written.actions),
                data_path="data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                video_path="videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4")
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return root
