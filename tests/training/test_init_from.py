"""`init_from` a checkpoint with another head or without a state input (OpenVLA → OpenVLA-OFT): the backbones keep
the checkpoint's weights, the head and the proprio projector start fresh, the cameras are this run's; backbones
that differ from the config's are a one-line error naming the part."""

from __future__ import annotations

import pytest
import torch

from vlx.builder import build_model
from vlx.checkpoint import save_checkpoint
from vlx.errors import ConfigError
from vlx.training.run import prepare_model

PROMPT = {"name": "pure", "image_placement": "after-bos"}


@pytest.fixture()
def token_vla(tiny_cfg: dict, tmp_path):
    """A saved OpenVLA-style checkpoint: one camera, no state, the action-token head on 256 new tokens."""
    torch.manual_seed(0)
    model = build_model({**tiny_cfg, "head": {"name": "action-tokens", "action_dim": 3, "tokens": "new"},
                         "prompt": PROMPT})
    return model, save_checkpoint(model, tmp_path / "openvla")


def stage(init_from) -> dict:
    return {"init_from": str(init_from), "prompt": PROMPT, "trainable": ["projector", "proprio", "head"]}


def test_a_new_head_state_and_cameras_on_the_checkpoints_backbones(tiny_cfg: dict, token_vla, capsys) -> None:
    saved, directory = token_vla
    cfg = {**tiny_cfg, "head": {"name": "l1-regression", "action_dim": 3, "chunk_size": 4},
           "observation": {"cameras": ["agentview_image", "wrist_image"], "state_keys": ["agent_pos", "gripper"]},
           "proprio": {"name": "mlp", "in_dim": 3}}
    model = prepare_model(cfg, stage(directory), "stages.vla", None)
    assert "stages.vla.init_from=" in capsys.readouterr().out
    assert type(model.head).__name__ == "L1RegressionHead" and model.chunk_size == 4 and model.proprio is not None
    assert model.observation.cameras == ["agentview_image", "wrist_image"] and model.observation.state_dim == 3
    for part in ("vision", "projector", "llm"):
        for (name, ours), theirs in zip(getattr(model, part).state_dict().items(),
                                        getattr(saved, part).state_dict().values(), strict=True):
            assert torch.equal(ours, theirs), f"{part}.{name}"
    assert (all(p.requires_grad for p in model.head.parameters())
            and not any(p.requires_grad for p in model.llm.parameters()))


def test_the_same_config_keeps_everything(tiny_cfg: dict, token_vla) -> None:
    saved, directory = token_vla
    cfg = {**tiny_cfg, "head": {"name": "action-tokens", "action_dim": 3, "tokens": "new"}}
    model = prepare_model(cfg, stage(directory), "stages.vla", None)
    assert type(model.head) is type(saved.head) and model.proprio is None
    assert model.head.codec.first_id == saved.head.codec.first_id


def test_different_backbones_are_an_error(tiny_cfg: dict, token_vla) -> None:
    _, directory = token_vla
    with pytest.raises(ConfigError, match=r"'stages.vla.init_from': the checkpoint's projector is not the projector "
                                          r"this config describes"):
        prepare_model({**tiny_cfg, "projector": {"name": "linear"}}, stage(directory), "stages.vla", None)
    llm = {**tiny_cfg["llm"], "config": {**tiny_cfg["llm"]["config"], "num_hidden_layers": 3}}
    with pytest.raises(ConfigError, match=r"checkpoint's llm is not the llm this config describes \(num_hidden_layers "
                                          r"4 vs 3\)"):
        prepare_model({**tiny_cfg, "llm": llm}, stage(directory), "stages.vla", None)
