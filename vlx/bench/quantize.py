"""`vlx bench quantize`: what `quantize=int8` (or `int8-dynamic`) costs a VLA in agreement and gains in memory.

Two copies of one model, one in full precision and one quantised (`vlx.quantization`), predict the same
observations. With `--checkpoint DIR` (a trained VLA, e.g. the `vla` stage of `vlx demo recipe=openvla-tiny`)
the observations are held-out demonstration steps (`--demos FILE`, default the checkpoint's `eval.demos`,
split `valid`), and both copies are also scored against the demonstrations (the `vlx eval` offline metrics);
without one it is the benchmarks' random OpenVLA-family VLA (`vlx.bench.predict_action.bench_vla`, `--size`) on
random images, where near-tied random logits make agreement a pessimistic bound. Reported: weight memory of
each copy, the agreement — for an action-token head the fraction of action tokens that are the same (the same of
OpenVLA's 256 bins), for a continuous head (L1, flow) the fraction of action dimensions within one bin width of
full precision —, the mean normalised L1 between the two predictions, and the median time of one
`predict_action` call of each (interleaved). The ratio is the agreement.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from vlx.bench.timing import BenchmarkError, BenchResult, interleave, medians, set_threads
from vlx.data.robomimic_hdf5 import RobomimicFile
from vlx.errors import ConfigError
from vlx.evaluation.actions import BINS, evaluate_actions, observation_of, predict_normalized, sample_indices
from vlx.heads.action_tokenizer import ActionTokenizer
from vlx.model import VisionLanguageModel
from vlx.quantization import check_mode, quantize_model

RANDOM_IMAGES = 32  # observations of the random model


BIN_WIDTH = 2.0 / BINS  # OpenVLA's bins over the normalised [-1, 1]


def agreement(full: np.ndarray, quantized: np.ndarray, tokens: bool) -> tuple[float, float]:
    """(agreement, mean absolute difference) of two normalised arrays. Agreement: for an action-token head the
    fraction of entries in the same of OpenVLA's bins (the action tokens that agree); for a continuous head, whose
    tiny moves flip a bin edge now and then, the fraction within one bin width of full precision."""
    difference = np.abs(full - quantized)
    if tokens:
        codec = ActionTokenizer(BINS, BINS)
        return float((codec.encode(full) == codec.encode(quantized)).mean()), float(difference.mean())
    return float((difference <= BIN_WIDTH).mean()), float(difference.mean())


def checkpoint_pair(checkpoint: str, device: str) -> tuple[VisionLanguageModel, VisionLanguageModel]:
    from vlx.checkpoint import load

    full = load(checkpoint, device=device).eval()
    if not full.is_vla:
        raise ConfigError(f"vlx bench quantize: {checkpoint} is not a VLA checkpoint (it has no action head)")
    return full, load(checkpoint, device=device).eval()


def demo_file(model: VisionLanguageModel, demos: str | None, checkpoint: str) -> RobomimicFile:
    path = demos or (model.config.get("eval") or {}).get("demos")
    if not path:
        raise ConfigError(f"vlx bench quantize: give --demos FILE.hdf5 (the checkpoint {checkpoint} names no "
                          "eval.demos)")
    return RobomimicFile(path, model.observation.cameras or "agentview_image", filter_key="valid", where="--demos",
                         instruction=None, state_keys=model.observation.state_keys)


def run(checkpoint: str | None = None, demos: str | None = None, mode: str = "int8", limit: int = 64,
        size: str = "small", warmup: int = 2, repeats: int = 10, threads: int | None = None,
        device: str = "cpu") -> BenchResult:
    """Agreement, memory and time per call of the full-precision and the quantised copy."""
    mode = check_mode(mode, "--mode")
    if mode == "none":
        raise ConfigError("vlx bench quantize: --mode none compares a model with itself; pick int8 or int8-dynamic")
    threads = set_threads(threads)
    rows: list[tuple[str, str]] = []
    if checkpoint:
        full, quantized = checkpoint_pair(checkpoint, device)
        file = demo_file(full, demos, checkpoint)
        indices = sample_indices(file, limit)
        images, state = observation_of(full, file, int(indices[0]))
        instruction = file.instruction(int(indices[0]))
        source = f"{checkpoint}, {len(indices)} held-out steps of {file.path}"
    else:
        from vlx.bench.predict_action import INSTRUCTION, bench_vla

        with tempfile.TemporaryDirectory(prefix="vlx-bench-") as tmp:
            full, quantized = bench_vla(size, Path(tmp)).to(device), bench_vla(size, Path(tmp)).to(device)
        state, instruction = None, INSTRUCTION
        pictures = np.random.default_rng(1).integers(0, 256, size=(RANDOM_IMAGES, 96, 96, 3), dtype=np.uint8)
        images = pictures[0]
        source = f"random {size} OpenVLA-family VLA, {RANDOM_IMAGES} random images"
    report = quantize_model(quantized, mode)
    if checkpoint:
        before, after = (predict_normalized(m, file, indices) for m in (full, quantized))  # (n, K, A) each
        for label, model in (("full precision", full), (mode, quantized)):
            scores = evaluate_actions(model, file, limit=limit)
            rows.append((f"{label} vs the demonstrations",
                         f"action_accuracy={scores.action_accuracy:.3f} action_l1={scores.action_l1:.4f}"))
    else:
        before, after = (np.stack([m.predict_action(p, instruction, "bench") for p in pictures]) for m in
                         (full, quantized))
        before, after = (full.action_stats["bench"].normalize(a) for a in (before, after))
    tokens = full.config.get("head", {}).get("name") == "action-tokens"
    same_bin, l1 = agreement(before, after, tokens)
    if not np.isfinite(after).all():
        raise BenchmarkError(f"vlx bench quantize: the {mode} model predicted non-finite actions")
    key = None if checkpoint else "bench"
    rounds = interleave({
        "full precision predict_action": lambda: full.predict_action(images, instruction, key, state),
        f"{mode} predict_action": lambda: quantized.predict_action(images, instruction, key, state),
    }, warmup, repeats)
    times = medians(rounds)
    return BenchResult(
        name="quantize", medians=times, rounds=rounds, ratio=same_bin,
        ratio_label=(f"fraction of action tokens equal to full precision's ({mode})" if tokens else
                     f"fraction of action dimensions within one bin width (2/256) of full precision ({mode})"),
        target="≥ 0.95",
        per="call",
        rows=[("model", source), ("threads", str(threads)),
              ("layers", f"{report.quantized_layers} linear layers quantised, {report.kept_layers} kept in full "
                         "precision (output layer, action head, state projector)"),
              ("weight memory", f"{report.bytes_before / 2**20:.2f} MiB → {report.bytes_after / 2**20:.2f} MiB "
                                f"({report.bytes_after / report.bytes_before:.1%})"),
              ("mean normalised L1 between the two predictions", f"{l1:.4f}"), *rows],
    )
