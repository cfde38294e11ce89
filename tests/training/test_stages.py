"""Stages: align trains only the projector, finetune projector + LLM; frozen parts stay bit-identical."""

from __future__ import annotations

import copy

import pytest
import torch

from vlx.checkpoint import load
from vlx.errors import ConfigError
from vlx.training.run import batch_plan, prepare_model, train_stage
from vlx.training.stages import apply_stage


def snapshot(module):
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def same(module, saved):
    return all(torch.equal(tensor, saved[name]) for name, tensor in module.state_dict().items())


@pytest.fixture()
def stage_cfg(tiny_cfg, shapes, tmp_path):
    cfg = copy.deepcopy(tiny_cfg)
    cfg["output_dir"] = str(tmp_path / "run")
    data = {
        "align": (shapes.captions("train"), None),
        "finetune": (shapes.questions("train"), shapes.questions("val")),
    }
    for name, (train, val) in data.items():
        stage = cfg["stages"][name]
        stage["data"]["train"] = {"name": "llava-json", "json_path": str(train), "image_dir": str(shapes.image_dir)}
        stage["data"]["val"] = (
            {"name": "llava-json", "json_path": str(val), "image_dir": str(shapes.image_dir), "limit": 8} if val
            else None
        )
        stage.update(epochs=1, max_steps=3, batch_size=8, global_batch_size=16, sample_table=0)
    return cfg


def test_align_then_finetune_freeze_exactly_the_right_parts(stage_cfg, tmp_path):
    model = prepare_model(stage_cfg, stage_cfg["stages"]["align"], "stages.align", None)
    vision, projector, llm = snapshot(model.vision), snapshot(model.projector), snapshot(model.llm)
    align_checkpoint = train_stage(stage_cfg, "align", model, tmp_path / "run")
    assert same(model.vision, vision) and same(model.llm, llm)
    assert not same(model.projector, projector)

    model = prepare_model(stage_cfg, stage_cfg["stages"]["finetune"], "stages.finetune", model)
    assert type(model.prompt_format).__name__ == "VicunaFormat"
    projector, llm = snapshot(model.projector), snapshot(model.llm)
    finetune_checkpoint = train_stage(stage_cfg, "finetune", model, tmp_path / "run")
    assert same(model.vision, vision)
    assert not same(model.llm, llm) and not same(model.projector, projector)

    reloaded = load(finetune_checkpoint)
    assert same(reloaded, snapshot(model))
    assert align_checkpoint.name == "align" and (align_checkpoint / "model.safetensors").is_file()


def test_finetune_can_start_from_an_align_checkpoint(stage_cfg, tmp_path):
    model = prepare_model(stage_cfg, stage_cfg["stages"]["align"], "stages.align", None)
    checkpoint = train_stage(stage_cfg, "align", model, tmp_path / "run")
    stage = {**stage_cfg["stages"]["finetune"], "init_from": str(checkpoint)}
    resumed = prepare_model(stage_cfg, stage, "stages.finetune", None)
    assert same(resumed, snapshot(model))
    assert {n for n, p in resumed.named_parameters() if p.requires_grad} == {
        n for n, _ in resumed.named_parameters() if n.startswith(("projector.", "llm."))
    }


def test_stage_errors_name_the_config_key(tiny_model):
    with pytest.raises(ConfigError, match=r"stages.x.trainable.*unknown parts \['visoin'\]"):
        apply_stage(tiny_model, ["visoin"], "stages.x.trainable")
    with pytest.raises(ConfigError, match="leaves no trainable parameter"):
        apply_stage(tiny_model, [], "stages.x.trainable")
    with pytest.raises(ConfigError, match=r"stages.x.global_batch_size=30 is not a multiple .* = 8 × 1 × 1"):
        batch_plan({"devices": 1}, {"batch_size": 8, "global_batch_size": 30}, "stages.x")
    with pytest.raises(ConfigError, match=r"global_batch_size=6 is not a multiple .* = 8 × 4 × 1"):
        batch_plan({"devices": 4}, {"batch_size": 8, "global_batch_size": 6}, "stages.x")
    with pytest.raises(ConfigError, match=r"trainer.devices='auto': give a number"):
        batch_plan({"devices": "auto"}, {"batch_size": 8, "global_batch_size": 8}, "stages.x")


def test_batch_plan_keeps_the_global_batch_on_any_number_of_devices():
    assert batch_plan({"devices": 2, "num_nodes": 2}, {"batch_size": 4, "global_batch_size": 64}, "s") == (4, 4)
    assert batch_plan({"devices": 2}, {"batch_size": 32, "global_batch_size": 32}, "s") == (16, 1)  # llava-tiny
    assert batch_plan({"devices": [0, 1, 2]}, {"batch_size": 16, "global_batch_size": 96}, "s") == (16, 2)
    assert batch_plan({"devices": 1}, {"batch_size": 8, "global_batch_size": 32}, "s") == (8, 4)


def test_bf16_mixed_and_gradient_checkpointing_train(stage_cfg, tmp_path):
    """The memory options run on the CPU and still update the trained parts only."""
    stage_cfg["trainer"]["precision"] = "bf16-mixed"
    stage_cfg["llm"]["gradient_checkpointing"] = True
    model = prepare_model(stage_cfg, stage_cfg["stages"]["finetune"], "stages.finetune", None)
    assert model.llm.model.model.gradient_checkpointing
    vision, llm = snapshot(model.vision), snapshot(model.llm)
    train_stage(stage_cfg, "finetune", model, tmp_path / "run")
    assert same(model.vision, vision) and not same(model.llm, llm)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_reinit_projector_starts_from_a_fresh_projector(stage_cfg, tmp_path):
    """Prismatic's no-align: a stage may reset the projector while keeping the other weights."""
    model = prepare_model(stage_cfg, stage_cfg["stages"]["align"], "stages.align", None)
    checkpoint = train_stage(stage_cfg, "align", model, tmp_path / "run")
    stage = {**stage_cfg["stages"]["finetune"], "init_from": str(checkpoint), "reinit_projector": True}
    fresh = prepare_model(stage_cfg, stage, "stages.finetune", None)
    assert not same(fresh.projector, snapshot(model.projector))
    assert same(fresh.llm, snapshot(model.llm)) and same(fresh.vision, snapshot(model.vision))


def test_a_stage_leaves_the_signal_handlers_as_it_found_them(stage_cfg, tmp_path):
    import signal

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGUSR1)}
    model = prepare_model(stage_cfg, stage_cfg["stages"]["align"], "stages.align", None)
    train_stage(stage_cfg, "align", model, tmp_path / "run")
    assert {signum: signal.getsignal(signum) for signum in before} == before
    assert not (tmp_path / "run" / "resume" / "align").exists()  # dropped once the final checkpoint is written
