"""FSDP checkpoints hold the full, right weights: 2 CPU processes under FULL_SHARD write a vlx checkpoint.

`fsdp_worker.py` (run by torch.distributed.run, gloo) trains the projector of the tiny LLaVA model for one
SGD step with the LLM and vision frozen in bf16, gathers the weights and saves. Checked here: every tensor of
the unwrapped model is in the checkpoint (the outermost unit's frozen embeddings, final norm and LM head
too, which the wrapped model's own state dict loses), the frozen ones bit-equal to where they started, the
projector's update equal to one single-process step on both ranks' rows together, and `load` rebuilds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlx.bench.gpu import synthetic_batch
from vlx.builder import build_model
from vlx.checkpoint import load, read_metadata
from vlx.training.stages import apply_stage
from vlx.training.strategies import cast_frozen

ROWS, LR = 2, 1.0  # rows per rank; a large step so the update dwarfs bf16 rounding
WORKER = Path(__file__).with_name("fsdp_worker.py")


def aligned_model(config: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(config)
    apply_stage(model, ["projector"])
    cast_frozen(model, torch.bfloat16)
    return model


@pytest.mark.slow
def test_fsdp_full_shard_checkpoint_has_every_weight_and_the_single_process_update(tmp_path, tiny_cfg):
    config = {**tiny_cfg, "prompt": tiny_cfg["stages"]["align"]["prompt"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER),
         str(tmp_path / "config.json"), str(tmp_path), str(ROWS), str(LR)],
        env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    model = aligned_model(config)
    initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    saved = load_file(tmp_path / "checkpoint" / "model.safetensors")
    assert saved.keys() == initial.keys()
    for name in ("llm.model.model.embed_tokens.weight", "llm.model.model.norm.weight", "llm.model.lm_head.weight"):
        assert name in saved  # the root unit's frozen weights (lost by the wrapped model's own state dict)
    for name, tensor in initial.items():
        if not name.startswith("projector."):
            assert saved[name].dtype == tensor.dtype and torch.equal(saved[name], tensor), name

    # The reference step: the whole model computing in bf16 (as FSDP's mixed precision does) on both ranks' rows.
    reference = aligned_model(config).to(torch.bfloat16)
    reference(synthetic_batch(reference, 2 * ROWS, "cpu")).loss.backward()
    for name, param in reference.projector.named_parameters():
        key = f"projector.{name}"
        update, expected = (saved[key] - initial[key]).flatten(), (-LR * param.grad.float()).flatten()
        assert update.abs().max() > 1e-3, key  # the projector did train
        assert torch.nn.functional.cosine_similarity(update, expected, dim=0) > 0.99, key
        assert abs(update.norm() / expected.norm() - 1) < 0.05, key

    assert read_metadata(tmp_path / "checkpoint")["parameters"] == model.parameter_counts()
    loaded = load(tmp_path / "checkpoint")
    assert torch.equal(loaded.state_dict()["projector.linear_1.weight"], saved["projector.linear_1.weight"])
