"""`vlx data convert`: robomimic HDF5 → LeRobot v3.0 directory, and LeRobot (v3.0 / v2.1) → robomimic HDF5.

robomimic → LeRobot writes LeRobot's v3.0 layout as its own writer does (huggingface/lerobot
`src/lerobot/datasets/`): each camera `obs/<cam>` becomes the video feature `observation.images.<cam>` (one mp4
per camera holding every episode in order, encoded as LeRobot encodes by default: libsvtav1, yuv420p, a keyframe
every 2 frames, crf 30), the state keys are concatenated into `observation.state` (its `names` are `key.i`, so
the way back splits them again), the actions become `action`, the demo's instruction its task; `timestamp` is
frame_index / fps. The parquet tables hold every frame (`data/chunk-000/file-000.parquet`), every episode with
where its frames and video segments are (`meta/episodes/chunk-000/file-000.parquet`) and the tasks
(`meta/tasks.parquet`); `meta/stats.json` has min, max, mean, std and count per feature (images per channel, in
[0, 1]). robomimic masks that are contiguous in episode order become `splits` of info.json. LeRobot →
robomimic writes `data/demo_i` with `actions`, `obs/<cam>` for each camera (the feature name without
`observation.images.`), the state (split back into its keys when its names are `key.i`, else `obs/state`), the
task as `ep_meta` `lang`, and `mask/<split>` for the splits of info.json. Actions and states are copied exactly
both ways; video frames are lossy (AV1), PNG image features exact. Both write to a temporary path and rename.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vlx.data.demo_steps import DemoSteps
from vlx.data.lerobot import IMAGE_PREFIX, camera_features
from vlx.errors import ConfigError

CODEC = {"libsvtav1": "av1", "h264": "h264", "libx264": "h264"}


def robomimic_keys(path: Path) -> tuple[list[str], list[str]]:
    """(camera keys, low-dim obs keys) of the first demo of a robomimic file, in the file's order."""
    import h5py

    from vlx.data.robomimic_layout import demo_order

    with h5py.File(path, "r") as file:
        names = sorted(file["data"], key=demo_order) if "data" in file else []
        if not names or "obs" not in file[f"data/{names[0]}"]:
            raise ConfigError(f"{path}: no data/demo_N/obs to convert")
        obs = file[f"data/{names[0]}/obs"]
        cameras = [k for k in obs if obs[k].dtype == np.uint8 and obs[k].ndim in (3, 4)]
        low_dim = [k for k in obs if k not in cameras and obs[k].ndim <= 2]
    return cameras, low_dim


def encode_video(frames: np.ndarray, path: Path, fps: int, vcodec: str) -> None:
    """Frames (N, H, W, 3) uint8 as an mp4 with LeRobot's default settings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"g": "2", "crf": "30", **({"preset": "12"} if vcodec == "libsvtav1" else {})}
    quiet = "SVT_LOG" not in os.environ  # SVT-AV1 prints ~25 info lines per video unless told otherwise
    if quiet:
        os.environ["SVT_LOG"] = "1"  # errors only
    try:
        _encode(frames, path, fps, vcodec, options)
    finally:
        if quiet:
            del os.environ["SVT_LOG"]


def _encode(frames: np.ndarray, path: Path, fps: int, vcodec: str, options: dict[str, str]) -> None:
    import av

    with av.open(str(path), "w") as output:
        stream = output.add_stream(vcodec, fps, options=options)
        stream.pix_fmt, stream.height, stream.width = "yuv420p", frames.shape[1], frames.shape[2]
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


def feature_stats(values: np.ndarray) -> dict[str, list]:
    """min/max/mean/std per column of (N, d) values, and the count."""
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(), "mean": values.mean(0).tolist(),
            "std": values.std(0).tolist(), "count": [len(values)]}


def image_stats(frames: np.ndarray) -> dict[str, list]:
    """LeRobot's per-channel image statistics, (3, 1, 1) each, in [0, 1]."""
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255.0  # (N·H·W, 3)
    stats = feature_stats(pixels)
    return {key: [[[v]] for v in value] if key != "count" else [len(frames)] for key, value in stats.items()}


def contiguous_splits(masks: dict[str, list[int]], total: int) -> tuple[dict[str, str], list[str]]:
    """robomimic masks (episode positions) that are ranges as LeRobot `splits` ("a:b"); the others' names."""
    splits, skipped = {}, []
    for key, positions in masks.items():
        ordered = sorted(positions)
        if ordered and ordered == list(range(ordered[0], ordered[-1] + 1)):
            splits[key] = f"{ordered[0]}:{ordered[-1] + 1}"
        else:
            skipped.append(key)
    return splits or {"train": f"0:{total}"}, skipped


def robomimic_masks(path: Path, demos: list[str]) -> dict[str, list[int]]:
    """Each `mask/<key>` of a robomimic file as positions in `demos`."""
    import h5py

    position = {name: i for i, name in enumerate(demos)}
    with h5py.File(path, "r") as file:
        masks = file.get("mask")
        if masks is None:
            return {}
        return {key: [position[n.decode()] for n in masks[key][:] if n.decode() in position] for key in masks}


def to_lerobot(src: Path, out: Path, fps: int = 10, camera_keys: list[str] | None = None,
               state_keys: list[str] | None = None, instruction: str | None = None, vcodec: str = "libsvtav1",
               progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """robomimic `src` → LeRobot v3.0 directory `out`; returns its info.json."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlx.data.robomimic_hdf5 import RobomimicFile

    found_cameras, found_low_dim = robomimic_keys(src)
    cameras = camera_keys or found_cameras
    states = found_low_dim if state_keys is None else state_keys
    data = RobomimicFile(src, cameras, instruction=instruction, state_keys=states or None, where="convert")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tasks = list(dict.fromkeys(data.instruction(data.demo_rows(d).start) for d in range(data.num_demos)))
    rows = {"timestamp": [], "frame_index": [], "episode_index": [], "index": [], "task_index": []}
    episodes, stats = [], {}
    for camera_index, camera in enumerate(data.camera_keys):
        frames = [data.episode_frames(d, camera_index) for d in range(data.num_demos)]  # (T, H, W, 3) each
        key = f"{IMAGE_PREFIX}{camera}"
        encode_video(np.concatenate(frames), tmp / "videos" / key / "chunk-000" / "file-000.mp4", fps, vcodec)
        stats[key] = image_stats(np.concatenate(frames))
        if progress is not None:
            progress(f"video {camera}", data.num_demos)
    start_time = 0.0
    for demo in range(data.num_demos):
        span = data.demo_rows(demo)
        length = span.stop - span.start
        task = tasks.index(data.instruction(span.start))
        rows["timestamp"] += (np.arange(length, dtype=np.float32) / fps).tolist()
        rows["frame_index"] += list(range(length))
        rows["episode_index"] += [demo] * length
        rows["index"] += list(range(span.start, span.stop))
        rows["task_index"] += [task] * length
        episode = {"episode_index": demo, "tasks": [tasks[task]], "length": length, "data/chunk_index": 0,
                   "data/file_index": 0, "dataset_from_index": span.start, "dataset_to_index": span.stop}
        for camera in data.camera_keys:
            key = f"videos/{IMAGE_PREFIX}{camera}"
            episode.update({f"{key}/chunk_index": 0, f"{key}/file_index": 0, f"{key}/from_timestamp": start_time,
                            f"{key}/to_timestamp": start_time + length / fps})
        episode.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        episodes.append(episode)
        start_time += length / fps
    actions, state = data.actions(), data.states()  # (N, A), (N, P) or None
    table = {"action": pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), actions.shape[1])}
    if state is not None:
        table["observation.state"] = pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), state.shape[1])
    table["timestamp"] = pa.array(rows["timestamp"], pa.float32())
    table.update({k: pa.array(rows[k], pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")})
    (tmp / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(table), tmp / "data" / "chunk-000" / "file-000.parquet")
    (tmp / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episodes), tmp / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pd.DataFrame({"task_index": range(len(tasks))}, index=pd.Index(tasks, name=None)).to_parquet(
        tmp / "meta" / "tasks.parquet")
    stats["action"] = feature_stats(actions)
    if state is not None:
        stats["observation.state"] = feature_stats(state)
    (tmp / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))
    splits, skipped = contiguous_splits(robomimic_masks(src, data.demos), data.num_demos)
    info = lerobot_info(data, fps, vcodec, len(tasks), splits, [f"{k}.{i}" for k in data.state_keys
                                                               for i in range(state_width(data, k))])
    (tmp / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    info["skipped_masks"] = skipped
    return info


def state_width(data: DemoSteps, key: str) -> int:
    """How many values the state key `key` adds to the concatenated state."""
    import h5py

    with h5py.File(data.path, "r") as file:
        values = file[f"data/{data.demos[0]}/obs/{key}"]
        return 1 if values.ndim == 1 else int(values.shape[1])


def lerobot_info(data: DemoSteps, fps: int, vcodec: str, num_tasks: int, splits: dict[str, str],
                 state_names: list[str]) -> dict[str, Any]:
    """meta/info.json of the converted dataset (LeRobot's v3.0 fields and defaults)."""
    features: dict[str, Any] = {}
    for camera, (height, width) in zip(data.camera_keys, data.image_sizes, strict=True):
        features[f"{IMAGE_PREFIX}{camera}"] = {
            "dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": height, "video.width": width, "video.codec": CODEC[vcodec],
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                     "video.channels": 3, "has_audio": False}}
    if data.state_dim is not None:
        features["observation.state"] = {"dtype": "float32", "shape": [data.state_dim], "names": state_names}
    features["action"] = {"dtype": "float32", "shape": [data.action_dim], "names": None}
    for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                        ("index", "int64"), ("task_index", "int64")):
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return {"codebase_version": "v3.0", "robot_type": None, "total_episodes": data.num_demos,
            "total_frames": len(data), "total_tasks": num_tasks, "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "fps": fps, "splits": splits,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": features}


def split_state(names: list[str] | None, state: np.ndarray) -> dict[str, np.ndarray]:
    """The concatenated state (T, P) as robomimic obs keys: by `key.i` names when they all have that form."""
    if names and len(names) == state.shape[1] and all(n.rpartition(".")[2].isdigit() for n in names):
        keys = list(dict.fromkeys(n.rpartition(".")[0] for n in names))
        columns = {k: [i for i, n in enumerate(names) if n.rpartition(".")[0] == k] for k in keys}
        return {k: state[:, c] if len(c) > 1 else state[:, c[0]] for k, c in columns.items()}
    return {"state": state}


def robomimic_state(data: DemoSteps, features: dict[str, Any], span: slice) -> dict[str, np.ndarray]:
    """The state of the steps `span` as robomimic obs keys: each LeRobot state feature, split by `key.i` names."""
    parts: dict[str, np.ndarray] = {}
    if not data.state_keys:
        return parts
    state, column = data.states()[span], 0  # (T, P)
    for key in data.state_keys:
        width = int(features[key]["shape"][0])
        values = state[:, column : column + width]  # (T, width)
        column += width
        named = split_state(features[key].get("names"), values)
        parts.update(named if list(named) != ["state"] else {key.removeprefix("observation."): values})
    return parts


def to_robomimic(src: Path, out: Path, camera_keys: list[str] | None = None, state_keys: list[str] | None = None,
                 progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """LeRobot directory `src` → robomimic HDF5 file `out`; returns a summary."""
    from vlx.data.lerobot import LeRobotDir, LeRobotLayout, parse_range
    from vlx.envs.record import atomic_hdf5, write_mask

    layout = LeRobotLayout(src)
    features = layout.info["features"]
    cameras = camera_keys or camera_features(features)
    states = state_keys if state_keys is not None else [k for k in ("observation.state",) if k in features]
    data = LeRobotDir(src, cameras, state_keys=states, where="convert")
    with atomic_hdf5(out) as file:
        group = file.create_group("data")
        group.attrs["env_args"] = json.dumps(data.env_args())
        for demo in range(data.num_demos):
            span = data.demo_rows(demo)
            demo_group = group.create_group(f"demo_{demo}")
            demo_group.attrs["num_samples"] = span.stop - span.start
            demo_group.attrs["ep_meta"] = json.dumps({"lang": data.instruction(span.start),
                                                      "lerobot_episode": data.demos[demo]})
            demo_group.create_dataset("actions", data=data.actions()[span])
            for camera_index, camera in enumerate(data.camera_keys):
                demo_group.create_dataset(f"obs/{camera.removeprefix(IMAGE_PREFIX)}",
                                          data=data.episode_frames(demo, camera_index), compression="lzf")
            for key, value in robomimic_state(data, features, span).items():
                demo_group.create_dataset(f"obs/{key}", data=value)
            if progress is not None:
                progress("episodes", 1)
        group.attrs["total"] = len(data)
        position = {int(name.removeprefix("episode_")): i for i, name in enumerate(data.demos)}
        for split, value in (layout.info.get("splits") or {}).items():
            chosen = [f"demo_{position[e]}" for e in parse_range(value, f"split {split}", layout.info["total_episodes"])
                      if e in position]
            write_mask(file, split, chosen)
    return {"demos": data.num_demos, "samples": len(data), "cameras": data.camera_keys, "state_keys": data.state_keys}
