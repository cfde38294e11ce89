"""Tiny local assets: written once per description, loaded back through the libraries' own paths."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from vlx.builder import to_plain
from vlx.config import compose
from vlx.data.tiny_assets import write_tiny_vision
from vlx.errors import ConfigError
from vlx.registry import VISION_BACKBONES


def test_timm_members_are_written_as_files_and_loaded_by_timm(tmp_path):
    vision = to_plain(compose(["recipe=prismatic-tiny", f"paths.home={tmp_path}"]).vision)
    write_tiny_vision(vision)
    files = [tmp_path / "tiny-assets" / name for name in ("tiny-dinov2.safetensors", "tiny-siglip.safetensors")]
    written = [f.stat().st_mtime_ns for f in files]
    write_tiny_vision(vision)  # same description: left alone
    assert [f.stat().st_mtime_ns for f in files] == written
    backbone = VISION_BACKBONES.build(vision, "vision")  # pretrained=true → timm loads the local files
    for member, file in zip(backbone.members, files, strict=True):
        saved = load_file(file)
        assert all(torch.equal(t, saved[n]) for n, t in member.model.state_dict().items())
    assert (backbone.num_patches, backbone.embed_dim) == (9, 112)


def test_changed_architecture_rewrites_the_asset(tmp_path):
    vision = to_plain(compose(["recipe=prismatic-tiny", f"paths.home={tmp_path}"]).vision)
    write_tiny_vision(vision)
    vision["members"][0]["model_kwargs"]["embed_dim"] = 32
    write_tiny_vision(vision)
    saved = load_file(tmp_path / "tiny-assets" / "tiny-dinov2.safetensors")
    assert saved["pos_embed"].shape[-1] == 32


def test_assets_are_never_written_to_hub_ids():
    with pytest.raises(ConfigError, match=r"vision.source=openai/clip-vit-large-patch14-336 is not a local path"):
        write_tiny_vision(to_plain(compose(["recipe=llava-v1.5-7b"]).vision))


def test_tiny_timm_vits_know_where_each_patch_is():
    """Patch position embeddings are a 2-D sin-cos grid at content scale: neighbours alike, rows separable."""
    from vlx.data.tiny_assets import POSITION_STD, tiny_timm_vit

    model = tiny_timm_vit("vit_small_patch14_reg4_dinov2", 64,
                          {"patch_size": 8, "embed_dim": 48, "depth": 1, "num_heads": 4})
    grid = model.pos_embed[0].reshape(8, 8, 48)  # (rows, cols, D)
    assert grid.std().item() == pytest.approx(POSITION_STD, rel=1e-4)
    along_row = [(grid[3, 0] - grid[3, col]).norm().item() for col in range(5)]  # distance grows with distance
    along_col = [(grid[0, 3] - grid[row, 3]).norm().item() for row in range(5)]
    assert along_row == sorted(along_row) and along_col == sorted(along_col) and along_row[1] > 0
    assert not torch.allclose(grid[3, 0], grid[0, 3])  # rows and columns are told apart
