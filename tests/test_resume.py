"""Exact resume through `vlx train`: real SIGTERM/SIGUSR1/SIGKILL at a step, a kill while saving, then
`resume=true` reaches bit-identical weights to an uninterrupted run (CPU, deterministic).

The runs train llava-tiny's two stages (align 2 steps; finetune 8 steps of 2 micro-batches, 5 steps per
epoch, validation at the epoch end) with a resume checkpoint every 2 steps. `VLX_FAULT` makes the
process signal itself at a given step (docs/resume.md).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.subprocess_helpers import run_vlx
from vlx.training.atomic_io import AtomicCheckpointIO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def train_args(vlx_home, tiny_cfg, shapes) -> list[str]:
    return [
        "train", "recipe=llava-tiny", f"paths.home={vlx_home}", "logger=none", f"shapes.root={shapes.root}",
        f"stages.align.data.train.json_path={shapes.captions('train')}",
        f"stages.finetune.data.train.json_path={shapes.questions('train')}",
        f"stages.finetune.data.val.json_path={shapes.questions('val')}", "stages.finetune.data.val.limit=8",
        "stages.align.max_steps=2", "stages.align.batch_size=8", "stages.align.global_batch_size=16",
        "stages.finetune.max_steps=8", "stages.finetune.batch_size=8", "stages.finetune.global_batch_size=16",
        "stages.finetune.sample_table=0", "checkpointing.every_n_steps=2", "checkpointing.keep=2",
    ]


def train(args: list[str], run: Path, *extra: str, fault: str | None = None):
    return run_vlx(*args, f"output_dir={run}", *extra, cwd=run.parent, env_extra={"VLX_FAULT": fault} if fault else {})


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {stage: load_file(run / "checkpoints" / stage / "model.safetensors") for stage in ("align", "finetune")}


def assert_identical(resumed: dict, reference: dict) -> None:
    for stage, tensors in reference.items():
        assert resumed[stage].keys() == tensors.keys()
        different = [name for name, tensor in tensors.items() if not torch.equal(resumed[stage][name], tensor)]
        assert different == [], f"{stage}: {len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def reference(train_args, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("reference") / "run"
    result = train(train_args, run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run / "resume" / "finetune").exists()  # a finished stage drops its resume checkpoints
    return weights(run)


def resume_and_compare(train_args, run: Path, reference: dict, continues_from: str) -> None:
    result = train(train_args, run, "resume=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resume: stage align is done, loading {run / 'checkpoints' / 'align'}" in result.stderr
    assert f"resume: stage finetune continues from {run / 'resume' / 'finetune' / continues_from}" in result.stderr
    assert_identical(weights(run), reference)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1"])
def test_signal_saves_at_the_next_step_boundary_and_resume_is_exact(name, train_args, reference, tmp_path):
    run, signum = tmp_path / "run", signal.Signals[name]
    result = train(train_args, run, fault=f"{name}@3")  # arrives before the 1st of step 4's 2 micro-batches
    assert result.returncode == 128 + signum, result.stderr[-3000:]
    saved = run / "resume" / "finetune" / "step-00000004.ckpt"
    assert (f"vlx: {name} received: stopped stage finetune at step 4 after saving {saved}; continue with resume=true"
            in result.stderr.splitlines())
    assert (run / "resume" / "finetune" / "last").read_text() == "step-00000004.ckpt\n"
    assert not (run / "checkpoints" / "finetune").exists()
    state = AtomicCheckpointIO().load_checkpoint(saved)  # weights_only=True
    assert state["global_step"] == 4
    assert state["callbacks"]["ResumeCheckpoints"]["data"] == {"epoch": 0, "batches": 8}
    parts = {key.split(".")[1] for key in state["state_dict"]}  # only what trains; the frozen tower is rebuilt
    assert parts == {"projector", "llm"}
    resume_and_compare(train_args, run, reference, "step-00000004.ckpt")
    assert not (run / "resume" / "finetune").exists()


def test_sigkill_resumes_from_the_last_periodic_checkpoint(train_args, reference, tmp_path):
    run = tmp_path / "run"
    result = train(train_args, run, fault="SIGKILL@7")  # after the epoch boundary at step 5
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    resume_dir = run / "resume" / "finetune"
    assert sorted(p.name for p in resume_dir.iterdir()) == ["last", "step-00000004.ckpt", "step-00000006.ckpt"]
    assert (resume_dir / "last").read_text() == "step-00000006.ckpt\n"
    assert AtomicCheckpointIO().load_checkpoint(resume_dir / "step-00000006.ckpt")["callbacks"]["ResumeCheckpoints"][
        "data"] == {"epoch": 1, "batches": 2}
    resume_and_compare(train_args, run, reference, "step-00000006.ckpt")


def test_kill_while_saving_keeps_the_previous_checkpoint_and_last(train_args, reference, tmp_path):
    run = tmp_path / "run"
    result = train(train_args, run, fault="SIGKILL-IN-SAVE@4")
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    resume_dir = run / "resume" / "finetune"
    partial = [p for p in resume_dir.iterdir() if p.name.startswith(".step-00000004.ckpt.tmp-")]
    assert len(partial) == 1 and partial[0].stat().st_size == 4096  # the half-written file never got the final name
    assert sorted(p.name for p in resume_dir.iterdir() if not p.name.startswith(".")) == ["last", "step-00000002.ckpt"]
    assert (resume_dir / "last").read_text() == "step-00000002.ckpt\n"
    assert AtomicCheckpointIO().load_checkpoint(resume_dir / "step-00000002.ckpt")["global_step"] == 2
    resume_and_compare(train_args, run, reference, "step-00000002.ckpt")
