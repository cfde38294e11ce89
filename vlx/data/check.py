"""`vlx data check`: run every dataset check over every sample or demo and report all problems at once.

Training stops at the first bad sample; before a long run one wants the whole list. The checks are the
ones training runs — `SampleTokeniser` for LLaVA JSON (plus decoding every image, which training does
lazily), `DemoReader` for robomimic HDF5 (plus every `mask/` filter key), `LeRobotDir` for a LeRobot
dataset directory (plus decoding every frame of every camera) — called one sample, demo or episode at a time
with their DataErrors collected in a `CheckReport`. `summary` prints the count per kind (the
kinds of docs/errors.md), the first few messages of each kind and a final `problems=N` line. Notes are
things that are handled but worth knowing, such as an action dimension that never changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vlx.data.action_stats import ActionStats
from vlx.data.llava_json import SampleTokeniser, load_image, read_json_list, unanswered_summary
from vlx.data.robomimic_layout import DemoReader, check_hdf5_path, json_attr
from vlx.errors import ConfigError, DataError
from vlx.llm.prompts import PromptFormat


@dataclass
class CheckReport:
    """What a check found in one dataset file: how many samples/demos it checked, problems and notes."""

    path: Path
    unit: str  # "samples" or "demos"
    checked: int = 0
    problems: list[DataError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of problems per kind, most frequent first."""
        return dict(Counter(problem.kind for problem in self.problems).most_common())

    def summary(self, first: int = 3) -> list[str]:
        """Printable lines: what was checked, each kind with its count and first `first` messages, notes,
        and `problems=N` last."""
        lines = [f"file={self.path}", f"{self.unit}={self.checked}"]
        for kind, count in self.counts().items():
            lines.append(f"{kind}: {count}")
            messages = [str(problem) for problem in self.problems if problem.kind == kind]
            lines += [f"  {message}" for message in messages[:first]]
            if count > first:
                lines.append(f"  ... and {count - first} more")
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"problems={len(self.problems)}")
        return lines


def check_llava_json(
    path: str | Path, image_dir: str | Path, prompt_format: PromptFormat, tokenizer: Any, num_image_tokens: int,
    max_length: int, on_unanswered: str = "skip",
) -> CheckReport:
    """Every sample of a LLaVA JSON file tokenised as training would, and every image decoded."""
    report = CheckReport(Path(path).expanduser(), "samples")
    try:
        records = read_json_list(report.path)
    except DataError as problem:  # a file that does not parse has no samples to check
        report.problems.append(problem)
        return report
    tokenise = SampleTokeniser(report.path, Path(image_dir).expanduser(), prompt_format, tokenizer, num_image_tokens,
                               max_length, on_unanswered)
    dropped = skipped = 0
    for index, record in enumerate(records):
        report.checked += 1
        try:
            sample = tokenise(index, record)
            skipped += sample is None
            dropped += sample is not None and sample.unanswered
            if sample is not None and sample.image is not None:
                load_image(sample.image, f"{report.path}: sample {sample.sample_id}")
        except DataError as problem:
            report.problems.append(problem)
    if dropped or skipped:
        report.notes.append(unanswered_summary(report.path, dropped, skipped))
    return report


def check_robomimic(
    path: str | Path, camera_key: str | list[str] = "agentview_image", action_key: str = "actions",
    instruction: str | None = None, filter_key: str | None = None, where: str = "data",
    state_keys: list[str] | None = None,
) -> CheckReport:
    """Every demo of a robomimic HDF5 file — its actions, every camera of `camera_key` (one key or a list), the
    low-dim `state_keys` — every `mask/` filter key (and `filter_key`, which must exist), the `env_args` attr,
    and a note for each action dimension with zero range."""
    report = CheckReport(Path(path).expanduser(), "demos")
    reader = DemoReader(report.path, camera_key, action_key, where, state_keys)
    try:
        check_hdf5_path(report.path)
        with h5py.File(report.path, "r") as file:
            _check_file(file, reader, instruction, filter_key, report)
    except DataError as problem:  # the file itself is unusable
        report.problems.append(problem)
    except (OSError, KeyError) as exc:  # a truncated or corrupt file, a dangling link
        report.problems.append(DataError(f"{report.path}: could not read the HDF5 file ({exc})", kind="corrupt-hdf5"))
    return report


def _collect(report: CheckReport, check: Callable[..., Any], *args: Any) -> Any:
    """`check(*args)`, or None with its DataError added to the report."""
    try:
        return check(*args)
    except DataError as problem:
        report.problems.append(problem)
        return None


def _check_file(file: h5py.File, reader: DemoReader, instruction: str | None, filter_key: str | None,
                report: CheckReport) -> None:
    names = reader.demo_names(file)
    masks = file.get("mask")
    keys = sorted(masks) if isinstance(masks, h5py.Group) else []
    for key in keys if filter_key is None or filter_key in keys else [*keys, filter_key]:
        _collect(report, reader.filter, file, names, key)
    _collect(report, json_attr, file["data"].attrs, "env_args", f"{report.path}: data")
    demos, problems = reader.read_demos(file, names, instruction)
    report.checked = len(names)
    report.problems.extend(problems)
    agreeing = [demo.actions for demo in demos if demo.actions.shape[1] == demos[0].actions.shape[1]] if demos else []
    if agreeing:
        _note_constant_actions(report, np.concatenate(agreeing), len(agreeing), repr(reader.action_key))


def check_lerobot(path: str | Path, camera_keys: list[str] | None = None, state_keys: list[str] | None = None,
                  action_key: str = "action") -> CheckReport:
    """Every episode of a LeRobot directory read as training reads it — the named cameras (default: every video
    and image feature), state keys (default: `observation.state` when there is one) and actions — and every frame
    of every camera decoded; a note says that vlx recomputes the statistics rather than read meta/stats.json."""
    from vlx.data.lerobot import LeRobotDir, LeRobotLayout, camera_features

    report = CheckReport(Path(path).expanduser(), "episodes")
    try:
        layout = LeRobotLayout(report.path)
        features = layout.info["features"]
        report.checked = len(layout.episodes)
        cameras = camera_keys or camera_features(features)
        states = state_keys if state_keys is not None else [k for k in ("observation.state",) if k in features]
        print(f"cameras={','.join(cameras)} state_keys={','.join(states) or 'none'} action_key={action_key}")
        data = LeRobotDir(report.path, cameras, action_key, state_keys=states, problems=report.problems)
    except DataError as problem:  # the directory itself is unusable
        report.problems.append(problem)
        return report
    except ConfigError as problem:  # e.g. a named camera the dataset does not have
        report.problems.append(DataError(str(problem), kind=problem.kind))
        return report
    for demo in range(data.num_demos):
        for camera in range(len(data.camera_keys)):
            _collect(report, data.episode_frames, demo, camera)
    _note_constant_actions(report, data.actions(), data.num_demos, repr(action_key))
    report.notes.append(f"{report.path}: statistics: vlx computes them from the episodes a source selects; "
                        "meta/stats.json is not read")
    return report


def _note_constant_actions(report: CheckReport, actions: np.ndarray, trajectories: int, name: str) -> None:
    """A note for each action dimension with zero range (q01 == q99): it teaches nothing."""
    stats = ActionStats.from_actions(actions, num_trajectories=trajectories)  # (N, A) actions
    for dim in np.flatnonzero(stats.q01 == stats.q99):
        handling = "normalises to 0 (nothing to learn)" if stats.mask[dim] else "is not normalised (mask false)"
        report.notes.append(f"{report.path}: {name} dim {dim} has zero range (q01 == q99 == "
                            f"{stats.q01[dim]:g}); it {handling} and un-normalises to that constant")
