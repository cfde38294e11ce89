"""A validated reader for LeRobot datasets (a local directory, layouts v3.0 and v2.1): frames, state, task and actions.

Layout (huggingface/lerobot `src/lerobot/datasets/`): `meta/info.json` names the `codebase_version`, `fps`, the
`features` (dtype and shape of each column: `video` and `image` cameras such as `observation.images.front`,
float vectors such as `observation.state` and `action`) and the path templates of the data and video files.
v3.0 keeps many episodes per file: `data/chunk-XXX/file-YYY.parquet` (one row per frame: the feature columns,
`episode_index`, `frame_index`, `timestamp`, `task_index`), `meta/episodes/chunk-XXX/file-YYY.parquet` (per
episode: `length`, `tasks`, and for each video key the file and the `from_timestamp` where the episode starts)
and `meta/tasks.parquet` (task string → `task_index`). v2.1 keeps one data parquet and one video per episode
(`data_path` / `video_path` with `episode_chunk` and `episode_index`), `meta/episodes.jsonl` and
`meta/tasks.jsonl`. Construction reads every non-pixel column of the selected episodes and checks what training
needs — the version, the named features and their dtypes and shapes, one row per frame in order, finite actions
and states, one task per episode — naming the directory, episode and feature; pixels are read on demand:
`image` features are PNG/JPEG bytes in the parquet (kept in memory, compressed), `video` features are decoded
with PyAV a frame at a time from the keyframe before it (frame i of an episode is the one at `from_timestamp +
timestamp[i]`; LeRobot puts a keyframe every 2 frames); `cache_images=True` decodes each episode once per process
and keeps it. The episode's task is
the instruction. Episodes: a `filter_key` names a split of `info.json` (`"train": "0:40"`) and `episodes` is a
range `"a:b"` or a list of indices; both select. Statistics are not read from `meta/stats.json`: vlx computes
its own from the selected episodes (`vlx.data.action_stats`), as for robomimic, so a split's statistics are
its own and the quantiles are vlx's.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlx.data.demo_steps import DemoSteps
from vlx.errors import ConfigError, DataError

VERSIONS = ("v3.0", "v2.1")
IMAGE_PREFIX = "observation.images."
CAMERA_DTYPES = ("video", "image")


def is_lerobot_dir(path: Path) -> bool:
    """Whether `path` is a directory with a LeRobot `meta/info.json` (what tells a LeRobot source from a file)."""
    return path.is_dir() and (path / "meta" / "info.json").is_file()


def camera_features(features: dict[str, Any]) -> list[str]:
    """The video and image features of an info.json feature table, in its order."""
    return [k for k, v in features.items() if v.get("dtype") in CAMERA_DTYPES]


@dataclass(frozen=True)
class Episode:
    """One episode's rows: actions (T, A), state (T, P) or None, timestamps (T,), task, and where its pixels are."""

    index: int
    task: str
    actions: np.ndarray
    state: np.ndarray | None
    timestamps: np.ndarray
    videos: dict[str, tuple[Path, float]]  # video key → (file, from_timestamp)
    images: dict[str, list[bytes]]  # image key → encoded frames


def read_info(root: Path) -> dict[str, Any]:
    """`meta/info.json`, checked for a supported version and a feature table."""
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DataError(f"{root}: no meta/info.json; expected a LeRobot dataset directory (v3.0 or v2.1)",
                        kind="missing-file")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})", kind="json-syntax") from None
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version not in VERSIONS:
        raise DataError(f"{path}: codebase_version {version!r} is not supported; vlx reads {', '.join(VERSIONS)} "
                        "(convert older datasets with lerobot's own converters)", kind="lerobot-version")
    if not isinstance(info.get("features"), dict) or not isinstance(info.get("fps"), (int, float)):
        raise DataError(f"{path}: needs a 'features' mapping and a numeric 'fps'", kind="lerobot-layout")
    return info


def resolve_key(info: dict[str, Any], key: str, where: str, kinds: tuple[str, ...], root: Path) -> str:
    """A feature name (a camera may be given without `observation.images.`), checked to have a dtype in `kinds`."""
    features = info["features"]
    name = key if key in features or f"{IMAGE_PREFIX}{key}" not in features else f"{IMAGE_PREFIX}{key}"
    if name not in features:
        known = [k for k, v in features.items() if v.get("dtype") in kinds]
        raise ConfigError(f"{root}: no feature {key!r} ({where}); its {'/'.join(kinds)} features are "
                          f"{', '.join(known) or 'none'}", kind="lerobot-feature")
    if features[name].get("dtype") not in kinds:
        raise ConfigError(f"{root}: feature {name!r} ({where}) has dtype {features[name].get('dtype')!r}; expected "
                          f"{' or '.join(kinds)}", kind="lerobot-feature")
    return name


def episode_selection(info: dict[str, Any], total: int, filter_key: str | None, episodes: Any, where: str,
                      root: Path) -> list[int]:
    """The selected episode indices: a split of info.json and/or an `a:b` range or list."""
    selected = list(range(total))
    if filter_key is not None:
        splits = info.get("splits") or {}
        if filter_key not in splits:
            raise ConfigError(f"{root}: no split {filter_key!r} in meta/info.json ({where}.filter_key); it has "
                              f"{', '.join(splits) or 'none'}; select episodes with {where}.episodes instead",
                              kind="unknown-filter-key")
        split = set(parse_range(splits[filter_key], f"split {filter_key}", total))
        selected = [i for i in selected if i in split]
    if episodes is not None:
        wanted = set(parse_range(episodes, f"{where}.episodes", total))
        selected = [i for i in selected if i in wanted]
    if not selected:
        raise ConfigError(f"{root}: the selection ({where}.filter_key={filter_key!r}, {where}.episodes={episodes!r}) "
                          f"leaves no episode of {total}", kind="unknown-filter-key")
    return selected


def parse_range(value: Any, what: str, total: int) -> list[int]:
    """`"a:b"` (a Python-style half-open range, either end optional) or a list of episode indices."""
    if isinstance(value, str) and ":" in value:
        start, _, stop = value.partition(":")
        try:
            return list(range(total))[slice(int(start) if start else None, int(stop) if stop else None)]
        except ValueError:
            pass
    elif isinstance(value, Sequence) and not isinstance(value, str) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in value):
        bad = [i for i in value if not 0 <= i < total]
        if bad:
            raise ConfigError(f"{what}: episodes {bad[:5]} do not exist (the dataset has {total})")
        return list(value)
    raise ConfigError(f"{what}={value!r}: expected a range 'a:b' of episode indices or a list of them")


def _parquet(path: Path, columns: list[str] | None = None) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise DataError(f"{path}: missing (named by the dataset's metadata)", kind="missing-file") from None
    except Exception as exc:  # pyarrow's errors: a truncated file, a missing column
        raise DataError(f"{path}: could not read it ({str(exc).splitlines()[0]})", kind="lerobot-layout") from None


def _vectors(table: Any, name: str, width: int, path: Path) -> np.ndarray:
    """A list-of-floats column (the info.json shape says `width` per frame) as (T, width) float32."""
    try:
        column = table.column(name).combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        return values.reshape(len(column), width)  # (T, width)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: column {name!r} is not {width} numbers per frame (meta/info.json's shape): "
                        f"{str(exc).splitlines()[0]}", kind="lerobot-layout") from None


def _jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    """The rows of a v2.1 JSON-lines metadata file."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: missing; a v2.1 dataset lists its {what} there", kind="missing-file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not JSON lines ({exc})", kind="json-syntax") from None


class LeRobotLayout:
    """The metadata of a LeRobot directory: episode rows (task, data file, video files) for both versions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.info = read_info(root)
        self.version = self.info["codebase_version"]
        self.fps = float(self.info["fps"])
        self.episodes = self._episodes()  # episode index → metadata row
        self.tasks = self._tasks()  # task index → task string

    def _episodes(self) -> dict[int, dict[str, Any]]:
        if self.version == "v2.1":
            rows = _jsonl(self.root / "meta" / "episodes.jsonl", "episodes")
        else:
            files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
            if not files:
                raise DataError(f"{self.root}: no meta/episodes/chunk-*/file-*.parquet; a v3.0 dataset lists its "
                                "episodes there", kind="missing-file")
            rows = []
            for file in files:
                table = _parquet(file)
                keep = [c for c in table.column_names if not c.startswith("stats/")]
                rows += table.select(keep).to_pylist()
        return {int(row["episode_index"]): row for row in rows}

    def _tasks(self) -> dict[int, str]:
        if self.version == "v2.1":
            rows = _jsonl(self.root / "meta" / "tasks.jsonl", "tasks")
            return {int(row["task_index"]): str(row["task"]) for row in rows}
        table = _parquet(self.root / "meta" / "tasks.parquet")
        names = [c for c in table.column_names if c != "task_index"]  # pandas keeps the task strings as its index
        if "task_index" not in table.column_names or len(names) != 1:
            raise DataError(f"{self.root / 'meta' / 'tasks.parquet'}: expected the task strings and a task_index "
                            "column", kind="lerobot-layout")
        return dict(zip(table.column("task_index").to_pylist(), map(str, table.column(names[0]).to_pylist()),
                        strict=True))

    def data_file(self, episode: int) -> Path:
        row = self.episodes[episode]
        if self.version == "v2.1":
            chunk = episode // int(self.info.get("chunks_size", 1000))
            return self.root / self.info["data_path"].format(episode_chunk=chunk, episode_index=episode)
        return self.root / self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                         file_index=row["data/file_index"])

    def video_file(self, episode: int, key: str) -> tuple[Path, float]:
        """(mp4 file, the timestamp where the episode starts in it)."""
        row = self.episodes[episode]
        if self.version == "v2.1":
            chunk = episode // int(self.info.get("chunks_size", 1000))
            return (self.root / self.info["video_path"].format(episode_chunk=chunk, video_key=key,
                                                               episode_index=episode), 0.0)
        return (self.root / self.info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                           file_index=row[f"videos/{key}/file_index"]),
                float(row[f"videos/{key}/from_timestamp"]))


def decode_video(path: Path, start: float, timestamps: np.ndarray, fps: float, where: str) -> np.ndarray:
    """The frames at `start + timestamps` (T,) of an mp4, (T, H, W, 3) uint8, each within half a frame."""
    import av

    wanted = start + np.asarray(timestamps, dtype=np.float64)  # (T,)
    tolerance = 0.5 / fps
    frames: list[np.ndarray | None] = [None] * len(wanted)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(max(int(wanted[0] / stream.time_base) - 1, 0), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                time = float(frame.pts * stream.time_base)
                if time > wanted[-1] + tolerance:
                    break
                slot = int(np.argmin(np.abs(wanted - time)))
                if abs(wanted[slot] - time) <= tolerance and frames[slot] is None:
                    frames[slot] = frame.to_ndarray(format="rgb24")  # (H, W, 3)
    except (av.error.FFmpegError, IndexError) as exc:
        raise DataError(f"{path}: could not decode the video for {where} ({exc})", kind="lerobot-video") from None
    missing = [i for i, f in enumerate(frames) if f is None]
    if missing:
        raise DataError(f"{path}: {where}: no video frame at {len(missing)} of its {len(wanted)} timestamps (first: "
                        f"{wanted[missing[0]]:.4f} s); the video and the data parquet disagree", kind="lerobot-video")
    return np.stack(frames)  # (T, H, W, 3)


def decode_image(data: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))  # (H, W, 3)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{where}: the image bytes do not decode ({exc})", kind="corrupt-image") from None


class LeRobotDir(DemoSteps):
    """The frames of the selected episodes of a LeRobot dataset directory, indexed in episode order; `where` is
    the config path of these arguments, for messages. Demos are named `episode_N`. `camera_key` is one feature or
    a list of them (None: the dataset's only camera). With a `problems` list, a bad episode is recorded there and
    left out instead of raising (`vlx data check`)."""

    def __init__(
        self, path: str | Path, camera_key: str | Sequence[str] | None, action_key: str = "action",
        filter_key: str | None = None, instruction: str | None = None, where: str = "data",
        cache_images: bool = False, state_keys: Sequence[str] | None = None, episodes: Any = None,
        problems: list[DataError] | None = None,
    ) -> None:
        self.path, self.where = Path(path).expanduser(), where
        self.action_key = action_key
        self.layout = LeRobotLayout(self.path)
        info = self.layout.info
        if camera_key is None:  # the dataset's only camera
            cameras = camera_features(info["features"])
            if len(cameras) != 1:
                raise ConfigError(f"{self.path}: has cameras {cameras or 'none'}; name the one to read "
                                  f"({where}.camera_key) or give observation.cameras", kind="camera-count")
        else:
            cameras = [camera_key] if isinstance(camera_key, str) else list(camera_key)
        self.camera_keys = [resolve_key(info, c, f"{where}.camera_keys", CAMERA_DTYPES, self.path)
                            for c in cameras]
        self.state_keys = [resolve_key(info, k, f"{where}.state_keys", ("float32", "float64"), self.path)
                           for k in state_keys or []]
        resolve_key(info, action_key, f"{where}.action_key", ("float32", "float64"), self.path)
        self.image_sizes = [tuple(info["features"][c]["shape"][:2]) for c in self.camera_keys]
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise ConfigError(f"{where}.instruction must be a non-empty string or null, got {instruction!r:.80}")
        total = int(info.get("total_episodes", len(self.layout.episodes)))
        selected = episode_selection(info, total, filter_key, episodes, where, self.path)
        read = self.read_episodes(selected, instruction, problems)
        if not read:
            raise DataError(f"{self.path}: no episode could be read", kind="lerobot-layout")
        self._episodes = read
        self._hold([f"episode_{e.index}" for e in read], [e.task for e in read], [e.actions for e in read],
                   [e.state for e in read] if self.state_keys else None)
        self._env_args = {"lerobot": {"version": self.layout.version, "fps": self.layout.fps,
                                      "robot_type": info.get("robot_type")}}
        self._cache: dict[tuple[int, int], np.ndarray] = {}  # (demo, camera) → frames, with cache_images
        self._pid = os.getpid()
        self._cache_all = cache_images

    def read_episodes(self, selected: list[int], instruction: str | None,
                      problems: list[DataError] | None = None) -> list[Episode]:
        """The selected episodes' rows, each data file read once; a DataError naming the first bad episode (or,
        given `problems`, every bad episode recorded there and left out)."""
        features = self.layout.info["features"]
        images = [c for c in self.camera_keys if features[c]["dtype"] == "image"]
        columns = list(dict.fromkeys(["episode_index", "frame_index", "timestamp", "task_index", self.action_key,
                                      *self.state_keys, *images]))
        def failed(problem: DataError) -> None:
            if problems is None:
                raise problem
            problems.append(problem)

        by_file: dict[Path, list[int]] = {}
        for index in selected:
            if index not in self.layout.episodes:
                failed(DataError(f"{self.path}: episode {index} is not in the episode metadata", kind="lerobot-layout"))
                continue
            by_file.setdefault(self.layout.data_file(index), []).append(index)
        read: dict[int, Episode] = {}
        for file, indices in by_file.items():
            try:
                table = _parquet(file, columns)
            except DataError as problem:
                failed(problem)
                continue
            owners = table.column("episode_index").to_numpy()  # (rows,)
            for index in indices:
                try:
                    read[index] = self.episode(index, table.take(np.flatnonzero(owners == index)), file, images,
                                               instruction)
                except DataError as problem:
                    failed(problem)
        return [read[index] for index in selected if index in read]

    def episode(self, index: int, table: Any, file: Path, images: list[str], instruction: str | None) -> Episode:
        """One episode from its rows of `file`, checked."""
        where = f"{self.path}: episode {index}"
        features = self.layout.info["features"]
        frames = table.column("frame_index").to_numpy()  # (T,)
        expected = int(self.layout.episodes[index].get("length", len(frames)))
        if len(frames) == 0 or not np.array_equal(frames, np.arange(len(frames))) or len(frames) != expected:
            raise DataError(f"{where}: {file} holds {len(frames)} rows with frame_index {frames[:3].tolist()}...; "
                            f"expected 0..{expected - 1} in order (meta length {expected})", kind="lerobot-layout")
        actions = _vectors(table, self.action_key, features[self.action_key]["shape"][0], file)  # (T, A)
        state = (np.concatenate([_vectors(table, k, features[k]["shape"][0], file) for k in self.state_keys], axis=1)
                 if self.state_keys else None)  # (T, P)
        for name, values in (("action", actions), ("state", state)):
            if values is not None and not np.isfinite(values).all():
                step = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
                raise DataError(f"{where}: the {name} at frame {step} is not finite",
                                kind="nonfinite-actions" if name == "action" else "nonfinite-state")
        task_ids = set(table.column("task_index").to_pylist())
        if instruction is None:
            if len(task_ids) != 1 or next(iter(task_ids)) not in self.layout.tasks:
                raise DataError(f"{where}: expected one known task per episode, got task_index {sorted(task_ids)}; "
                                f"give {self.where}.instruction to use one for every episode",
                                kind="no-instruction")
            instruction = self.layout.tasks[next(iter(task_ids))]
        timestamps = table.column("timestamp").to_numpy().astype(np.float64)  # (T,)
        videos = {c: self.layout.video_file(index, c) for c in self.camera_keys if features[c]["dtype"] == "video"}
        encoded = {}
        for camera in images:
            encoded[camera] = [item["bytes"] for item in table.column(camera).to_pylist()]
            if any(data is None for data in encoded[camera]):
                raise DataError(f"{where}: {camera} has frames without embedded bytes", kind="corrupt-image")
        return Episode(index, instruction, actions, state, timestamps, videos, encoded)

    def episode_frames(self, demo: int, camera: int) -> np.ndarray:
        """Every frame of one camera of one selected episode, (T, H, W, 3) uint8."""
        return self._decode(demo, camera, slice(None)).copy()

    def _frame(self, demo: int, step: int, camera: int) -> np.ndarray:
        return self._decode(demo, camera, slice(step, step + 1))[0].copy()

    def _decode(self, demo: int, camera: int, steps: slice) -> np.ndarray:
        """Frames `steps` of one camera of one episode, (n, H, W, 3): from the cache when all are cached, else
        decoded — a video from the keyframe before the first (LeRobot encodes one every 2 frames), so one frame
        of a random sample costs about two decoded frames."""
        if self._pid != os.getpid():  # a forked DataLoader worker: its own cache
            self._cache, self._pid = {}, os.getpid()
        slot = (demo, camera)
        if self._cache_all and slot not in self._cache:
            self._cache[slot] = self._decode_uncached(demo, camera, slice(None))
        if slot in self._cache:
            return self._cache[slot][steps]
        return self._decode_uncached(demo, camera, steps)

    def _decode_uncached(self, demo: int, camera: int, steps: slice) -> np.ndarray:
        episode, key = self._episodes[demo], self.camera_keys[camera]
        where = f"episode {episode.index} {key}"
        if key in episode.videos:
            file, start = episode.videos[key]
            return decode_video(file, start, episode.timestamps[steps], self.layout.fps, where)
        indices = range(len(episode.images[key]))[steps]
        return np.stack([decode_image(episode.images[key][i], f"{self.path}: {where} frame {i}") for i in indices])

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the decoded frames; the receiving process decodes (and, with cache_images, caches) its own."""
        return {**self.__dict__, "_cache": {}}
