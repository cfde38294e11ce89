"""Data parallelism is exact: 2 CPU processes (gloo) reach the weights of 1 process with the doubled batch.

Both runs go through the `vlx` command with `trainer=ddp` (the 2-process one is launched by Lightning, which
re-runs the `vlx train` job in a second process); both use DDP's distributed sampler, so step k of the single
process sees exactly the union of the two ranks' step-k batches. The samples are the shapes count questions,
which all have the same number of supervised tokens, so the mean of the ranks' token-mean losses equals the
single process's token-mean loss (DDP averages gradients over ranks, not over tokens).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.subprocess_helpers import run_vlx

STEPS, GLOBAL_BATCH = 2, 8


def ddp_args(vlx_home: Path, shapes_root: Path, data: Path, devices: int, name: str) -> list[str]:
    return [
        "train", "recipe=llava-tiny", "trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={devices}",
        "trainer.precision=32-true", f"paths.home={vlx_home}", "logger=none", "train.stages=[finetune]",
        f"stages.finetune.data.train.json_path={data}", f"stages.finetune.data.train.image_dir={shapes_root}",
        "stages.finetune.data.val=null", f"stages.finetune.max_steps={STEPS}", "stages.finetune.batch_size=8",
        f"stages.finetune.global_batch_size={GLOBAL_BATCH}", "stages.finetune.warmup_ratio=0", f"run_name={name}",
    ]


def run(tmp_path: Path, args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    return run_vlx(*args, cwd=tmp_path, env_extra={"VLX_FAULT": fault} if fault else None, timeout=300)


def train(tmp_path: Path, vlx_home: Path, shapes_root: Path, data: Path, devices: int, name: str) -> Path:
    result = run(tmp_path, ddp_args(vlx_home, shapes_root, data, devices, name))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert f"Starting with {devices} processes" in output or devices == 1, output[-3000:]
    assert output.count("checkpoint[finetune]=") == 1  # only rank 0 reports (and writes) the checkpoint
    return tmp_path / "runs" / name / "checkpoints" / "finetune" / "model.safetensors"


@pytest.mark.slow
def test_two_processes_reach_the_weights_of_one_process_with_the_doubled_batch(tmp_path, vlx_home, tiny_cfg, shapes):
    samples = [s for s in json.loads(shapes.questions("train").read_text()) if s["question_type"] == "count"]
    data = tmp_path / "count.json"
    data.write_text(json.dumps(samples[: STEPS * GLOBAL_BATCH]))
    assert len(samples) >= STEPS * GLOBAL_BATCH

    single = load_file(train(tmp_path, vlx_home, shapes.root, data, devices=1, name="one"))
    double = load_file(train(tmp_path, vlx_home, shapes.root, data, devices=2, name="two"))
    initial = load_file(Path(tiny_cfg["llm"]["source"]) / "model.safetensors")

    assert single.keys() == double.keys()
    # Adam moves each weight by about lr (2e-3) per step; the runs differ only by fp32 summation order
    # (measured: at most 4e-6), while a different batch composition would differ by about lr.
    for name in single:
        torch.testing.assert_close(double[name], single[name], rtol=0, atol=2e-5, msg=name)
    updates = {n: (single[f"llm.model.{n}"] - initial[n]).abs().max().item() for n in initial
               if single[f"llm.model.{n}"].shape == initial[n].shape}
    assert sum(u > 1e-3 for u in updates.values()) > len(updates) // 2  # the LLM really trained


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step_and_resume_is_exact(tmp_path, vlx_home, tiny_cfg,
                                                                                     shapes):
    """SIGTERM reaches only rank 1 (the child process) after step 3; the ranks agree at the next step
    boundary, save together and exit 143; `resume=true` then reaches the uninterrupted run's weights."""
    data = tmp_path / "questions.json"
    data.write_text(json.dumps(json.loads(shapes.questions("train").read_text())[: 6 * GLOBAL_BATCH]))

    def args_for(name: str) -> list[str]:
        args = [a for a in ddp_args(vlx_home, shapes.root, data, 2, name) if "max_steps" not in a]
        return [*args, "stages.finetune.max_steps=6", "checkpointing.every_n_steps=0"]

    whole = run(tmp_path, args_for("whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    args = args_for("cut")
    stopped = run(tmp_path, args, fault="SIGTERM@3@1")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    assert "SIGTERM received: stopped stage finetune at step 4" in stopped.stderr
    assert sorted(p.name for p in (tmp_path / "runs" / "cut" / "resume" / "finetune").glob("step-*.ckpt")) == [
        "step-00000004.ckpt"]

    resumed = run(tmp_path, [*args, "resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = load_file(tmp_path / "runs" / "whole" / "checkpoints" / "finetune" / "model.safetensors")
    cut = load_file(tmp_path / "runs" / "cut" / "checkpoints" / "finetune" / "model.safetensors")
    assert cut.keys() == whole.keys()
    assert [name for name in whole if not torch.equal(cut[name], whole[name])] == []
