"""Offline action metrics of a VLA on held-out demonstration steps, with a language-blind control.

For each step of a robomimic split, the model predicts a chunk from the step's cameras, state and instruction
(as in closed loop); prediction and demonstration (the actions t..t+K-1 of the step's demo) are compared in
the normalised space of the model's action statistics, over the steps that exist in the demo: per dimension,
whether both fall in the same of OpenVLA's 256 bins (`action_accuracy`, the action-token accuracy for token
heads; the same binning for continuous heads) and the absolute error of the prediction against the
demonstration's bin centre (`action_l1`, normalised units). With `instruction_override` every step gets the
same uninformative instruction — the control that shows whether the policy reads the language at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vlx.data.action_stats import select_stats
from vlx.data.robomimic_hdf5 import RobomimicFile
from vlx.heads.action_tokenizer import ActionTokenizer
from vlx.model import VisionLanguageModel

BINS = 256


@dataclass(frozen=True)
class ActionScores:
    """Bin accuracy (overall and per dimension) and normalised L1 over `n` steps."""

    action_accuracy: float
    per_dimension: list[float]
    action_l1: float
    n: int


def observation_of(model: VisionLanguageModel, demos: RobomimicFile, index: int) -> tuple[object, object]:
    """(image or {camera: image}, state or None) of a demo step, named as the model's observation spec wants."""
    frames = demos.images(index)
    cameras = model.observation.cameras
    images = (dict(zip(cameras, (frames[key] for key in demos.camera_keys), strict=False)) if cameras
              else frames[demos.camera_key])
    return images, demos.state(index) if demos.state_keys else None


def sample_indices(demos: RobomimicFile, limit: int | None) -> np.ndarray:
    """`limit` evenly spaced step indices of `demos` (all of them when `limit` is None)."""
    count = len(demos) if limit is None else min(limit, len(demos))
    return np.linspace(0, len(demos) - 1, count).round().astype(int)


def predict_normalized(
    model: VisionLanguageModel, demos: RobomimicFile, indices: np.ndarray, unnorm_key: str | None = None,
    instruction_override: str | None = None, batch_size: int = 64, progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The model's chunks for the demo steps `indices`, in the normalised units of its action statistics:
    (n, K, A)."""
    stats = select_stats(model.action_stats, unnorm_key)
    chunks = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        observations = [observation_of(model, demos, i) for i in chunk]
        instructions = [instruction_override or demos.instruction(i) for i in chunk]
        states = [state for _, state in observations] if demos.state_keys else None
        predicted = model.predict_actions([images for images, _ in observations], instructions, unnorm_key, states)
        chunks.append(stats.normalize(predicted.reshape(len(chunk), model.chunk_size, -1)))  # (b, K, A)
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(chunks)


def evaluate_actions(
    model: VisionLanguageModel, demos: RobomimicFile, unnorm_key: str | None = None, limit: int | None = None,
    instruction_override: str | None = None, batch_size: int = 64, progress: Callable[[int], None] | None = None,
) -> ActionScores:
    """Score `model` on (up to `limit`, evenly spaced) steps of `demos` (opened with the model's camera and
    state keys)."""
    stats = select_stats(model.action_stats, unnorm_key)
    codec = ActionTokenizer(BINS, BINS)  # OpenVLA's bins; the ids themselves do not matter here
    indices = sample_indices(demos, limit)
    predicted = predict_normalized(model, demos, indices, unnorm_key, instruction_override, batch_size,
                                   progress)  # (n, K, A)
    targets, real = zip(*(demos.chunk(i, model.chunk_size) for i in indices), strict=True)
    target = stats.normalize(np.stack(targets))  # (n, K, A)
    keep = np.stack(real)  # (n, K): steps that exist in the demo
    hit = (codec.encode(predicted) == codec.encode(target))[keep]  # (m, A)
    error = np.abs(predicted - codec.decode(codec.encode(target)))[keep]  # (m, A)
    return ActionScores(float(hit.mean()), hit.mean(0).tolist(), float(error.mean()), len(indices))
