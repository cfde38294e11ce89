"""`vlx bench action-rate`: actions per second of OpenVLA's one-token-at-a-time decoding and vlx's chunked heads.

One VLA shape (`vlx.bench.models.vla_config`: fused DINOv2 + SigLIP-style towers, fused MLP, a Llama with a
32,064-row vocabulary, 7-D actions) with five ways to act, all from one camera image and the instruction:
(a) the OpenVLA-style reference — `generate()` of 7 action tokens (K = 1; `vlx.bench.predict_action`'s
reference, which checks that it equals (b)), (b) vlx's autoregressive action-token head (K = 1), (c)
`action-tokens-parallel`, (d) `l1-regression` and (e) `flow-matching` (`num_steps` 10), each with chunks of
K = 8 decoded in one LLM pass. The one-pass models share (b)'s vision towers, projector and LLM weights (the
same seeds); their heads are freshly initialised — the benchmark times the work, not the policy. A
contender's rate is K / (median seconds per call); the ratio is the best one-pass head's rate over the
reference's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vlx.bench.models import build, roughen, vla_config, write_tokenizer
from vlx.bench.predict_action import (
    INSTRUCTION,
    UNNORM_KEY,
    action_only_outputs,
    check_matches_reference,
    reference_predict_action,
)
from vlx.bench.timing import BenchmarkError, BenchResult, bench_device, interleave, medians, set_threads
from vlx.data.action_stats import ActionStats
from vlx.model import VisionLanguageModel

CHUNK = 8
ONE_PASS = {  # contender → head node (chunk size CHUNK)
    "(c) action-tokens-parallel K=8": {"name": "action-tokens-parallel", "tokens": "new"},
    "(d) l1-regression K=8": {"name": "l1-regression"},
    "(e) flow-matching K=8, 10 steps": {"name": "flow-matching", "num_steps": 10},
}


def head_model(config: dict[str, Any], head: dict[str, Any], action_dim: int, seed: int) -> VisionLanguageModel:
    """The benchmark VLA with `head` (statistics `bench` for its actions)."""
    model = roughen(build({**config, "head": {**head, "action_dim": action_dim}}, seed)).eval()
    actions = np.random.default_rng(seed).uniform(-2.0, 2.0, size=(500, action_dim)).astype(np.float32)
    model.action_stats[UNNORM_KEY] = ActionStats.from_actions(actions, num_trajectories=10)
    return model


def run(size: str = "small", warmup: int = 2, repeats: int = 10, threads: int | None = None, device: str | None = None,
        action_dim: int = 7, seed: int = 0) -> BenchResult:
    """Median seconds per call of each contender (interleaved); ratio = best one-pass actions/s / reference's.
    `device` defaults to the GPU when there is one."""
    device = bench_device(device)
    threads = set_threads(threads)
    with tempfile.TemporaryDirectory(prefix="vlx-bench-") as tmp:
        config = vla_config(size, write_tokenizer(Path(tmp) / "tokenizer"), action_dim)
        autoregressive = head_model(config, config["head"], action_dim, seed).to(device)
        action_only_outputs(autoregressive)  # greedy = constrained, so the reference must match exactly
        models = {name: head_model(config, {**head, "chunk_size": CHUNK}, action_dim, seed).to(device)
                  for name, head in ONE_PASS.items()}
    image = np.random.default_rng(1).integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    check_matches_reference(autoregressive, image, "action-rate")
    for name, model in models.items():
        chunk = model.predict_action(image, INSTRUCTION, UNNORM_KEY)
        if chunk.shape != (CHUNK, action_dim) or not np.isfinite(chunk).all():
            raise BenchmarkError(f"action-rate: {name} returned a chunk of shape {chunk.shape}, expected "
                                 f"({CHUNK}, {action_dim}) finite values")
    contenders = {
        "(a) reference generate() K=1": lambda: reference_predict_action(autoregressive, image, INSTRUCTION),
        "(b) vlx action-tokens K=1": lambda: autoregressive.predict_action(image, INSTRUCTION, UNNORM_KEY),
        **{name: (lambda m=model: m.predict_action(image, INSTRUCTION, UNNORM_KEY)) for name, model in models.items()},
    }
    rounds = interleave(contenders, warmup, repeats)
    times = medians(rounds)
    chunk = {name: 1 if "K=1" in name else CHUNK for name in times}
    rate = {name: chunk[name] / seconds for name, seconds in times.items()}
    reference = rate["(a) reference generate() K=1"]
    best = max(ONE_PASS, key=lambda name: rate[name])
    return BenchResult(
        name="action-rate", medians=times, rounds=rounds, ratio=rate[best] / reference,
        ratio_label=f"best one-pass head ({best.split(' ', 1)[1]}) actions/s / reference actions/s",
        target="≥ 20", per="call",
        rows=[("device", device),
              ("model", f"{size} OpenVLA-family VLA, {sum(p.numel() for p in autoregressive.parameters()):,} "
                        f"parameters (autoregressive), {autoregressive.vision.num_patches} patches, "
                        f"{action_dim}-D actions"),
              ("threads", str(threads)),
              *[(f"actions/s {name}", f"{rate[name]:.1f} ({chunk[name]} per call, {1 / times[name]:.1f} calls/s)")
                for name in times]],
    )
