"""Offline action metrics of a VLA on held-out demonstration steps, with a language-blind control.

For each step of a robomimic split, the model predicts an action from the camera image and the
instruction (constrained decoding, as in closed loop); the prediction is re-binned in the normalised
space of the model's action statistics and compared with the demonstration's action token per
dimension (`action_accuracy`) and in L1 (`action_l1`, normalised units). With `instruction_override`
every step gets the same uninformative instruction — the control that shows whether the policy reads
the language at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vlx.data.action_stats import select_stats
from vlx.data.robomimic_hdf5 import RobomimicFile
from vlx.model import VisionLanguageModel


@dataclass(frozen=True)
class ActionScores:
    """Action-token accuracy (overall and per dimension) and normalised L1 over `n` steps."""

    action_accuracy: float
    per_dimension: list[float]
    action_l1: float
    n: int


def evaluate_actions(
    model: VisionLanguageModel, demos: RobomimicFile, unnorm_key: str | None = None, limit: int | None = None,
    instruction_override: str | None = None, batch_size: int = 64, progress: Callable[[int], None] | None = None,
) -> ActionScores:
    """Score `model` on (up to `limit`, evenly spaced) steps of `demos`."""
    stats = select_stats(model.action_stats, unnorm_key)
    codec = model.action_head.tokenizer
    count = len(demos) if limit is None else min(limit, len(demos))
    indices = np.linspace(0, len(demos) - 1, count).round().astype(int)
    hits, errors = [], []
    for start in range(0, count, batch_size):
        chunk = indices[start : start + batch_size]
        images = [demos.image(i) for i in chunk]
        instructions = [instruction_override or demos.instruction(i) for i in chunk]
        predicted = stats.normalize(model.predict_actions(images, instructions, unnorm_key))  # (b, A)
        target = stats.normalize(np.stack([demos.action(i) for i in chunk]))  # (b, A)
        hits.append(codec.encode(predicted) == codec.encode(target))  # (b, A)
        errors.append(np.abs(predicted - codec.decode(codec.encode(target))))  # (b, A)
        if progress is not None:
            progress(len(chunk))
    hit, error = np.concatenate(hits), np.concatenate(errors)  # (n, A)
    return ActionScores(float(hit.mean()), hit.mean(0).tolist(), float(error.mean()), count)
