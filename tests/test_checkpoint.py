"""Checkpoint directories: self-contained round trip, atomic replacement, clear errors."""

from __future__ import annotations

import pytest
import torch

from vlx.checkpoint import load, read_metadata, save_checkpoint
from vlx.errors import CheckpointError


def test_round_trip_gives_identical_weights_and_outputs(tiny_model, tmp_path, monkeypatch):
    directory = save_checkpoint(tiny_model, tmp_path / "ckpt", {"stage": "finetune"})
    monkeypatch.setenv("VLX_HOME", str(tmp_path / "elsewhere"))  # the original assets are not needed
    loaded = load(directory)
    original = tiny_model.state_dict()
    assert set(loaded.state_dict()) == set(original)
    assert all(torch.equal(t, original[n]) for n, t in loaded.state_dict().items())
    assert loaded.config["llm"]["source"] is None and loaded.config["vision"]["source"] is None
    assert read_metadata(directory)["stage"] == "finetune"
    assert read_metadata(directory)["parameters"]["total"] == tiny_model.parameter_counts()["total"]
    ids = tiny_model.prompt_ids("How many shapes are there?", has_image=False).unsqueeze(0)
    mask = torch.ones_like(ids)
    tiny_model.eval()
    torch.testing.assert_close(loaded.llm(loaded.embed(ids, None), mask),
                               tiny_model.llm(tiny_model.embed(ids, None), mask))
    assert len(loaded.tokenizer) == len(tiny_model.tokenizer)


def test_saving_again_replaces_the_checkpoint_and_leaves_no_temporary(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ckpt")
    with torch.no_grad():
        tiny_model.projector.linear_1.bias.fill_(0.5)
    save_checkpoint(tiny_model, tmp_path / "ckpt")
    assert torch.all(load(tmp_path / "ckpt").projector.linear_1.bias == 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_incomplete_checkpoint_names_the_missing_file(tiny_model, tmp_path):
    directory = save_checkpoint(tiny_model, tmp_path / "ckpt")
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"ckpt is not a complete vlx checkpoint: model.safetensors is missing"):
        load(directory)


def test_mismatched_weights_list_the_offending_names(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = save_checkpoint(tiny_model, tmp_path / "ckpt")
    tensors = load_file(directory / "model.safetensors")
    tensors.pop("projector.linear_2.bias")
    tensors["projector.extra"] = torch.zeros(1)
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(CheckpointError,
                       match=r"missing \['projector.linear_2.bias'\].*unexpected \['projector.extra'\]"):
        load(directory)


def test_fused_backbone_model_round_trips(tiny_cfg, tmp_path):
    """A Prismatic-style model (two tiny timm ViTs, fused MLP, pure prompt) rebuilds from its checkpoint."""
    from vlx.builder import build_model

    member = {"name": "timm-vit", "image_size": 32, "model_kwargs": {"depth": 2, "num_heads": 2}}
    vision = {"name": "fused", "members": [
        {**member, "model_id": "vit_small_patch16_224", "model_kwargs": {**member["model_kwargs"], "embed_dim": 16}},
        {**member, "model_id": "vit_base_patch16_siglip_224",
         "model_kwargs": {**member["model_kwargs"], "embed_dim": 24}},
    ]}
    cfg = {**tiny_cfg, "vision": vision, "projector": {"name": "fused-mlp"},
           "prompt": {"name": "pure", "image_placement": "after-bos"}}
    model = build_model(cfg)
    loaded = load(save_checkpoint(model, tmp_path / "prism"))
    assert loaded.vision.embed_dim == 40 and type(loaded.projector).__name__ == "FusedMLPProjector"
    assert all(torch.equal(t, model.state_dict()[n]) for n, t in loaded.state_dict().items())
    assert loaded.prompt_format.image_placement == "after-bos"
