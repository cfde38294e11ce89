"""`vlx export plain` → `vlx import plain` restores a model exactly: tensors, config, tokenizer, action statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


def test_round_trip_restores_a_vla_exactly(tiny_vla, tmp_path: Path) -> None:
    import vlx
    from vlx.checkpoint import checkpoint_config, save_checkpoint
    from vlx.interop.plain import export_plain, import_plain

    save_checkpoint(tiny_vla, tmp_path / "ckpt", metadata={"stage": "vla"})
    export_plain(tmp_path / "ckpt", tmp_path / "plain")
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["format"] == "vlx-plain"
    import_plain(tmp_path / "plain", tmp_path / "back")
    back = vlx.load(tmp_path / "back")
    original = tiny_vla.state_dict()
    assert sorted(back.state_dict()) == sorted(original)
    for name, tensor in back.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert checkpoint_config(back) == checkpoint_config(tiny_vla)
    assert back.tokenizer.get_vocab() == tiny_vla.tokenizer.get_vocab()
    assert back.action_stats["toy"].to_dict() == tiny_vla.action_stats["toy"].to_dict()
    assert json.loads((tmp_path / "back" / "vlx.json").read_text())["stage"] == "vla"
    image = np.random.default_rng(0).integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(back.predict_action(image, "move left"), tiny_vla.predict_action(image, "move left"))


def test_import_refuses_other_directories_and_lists_missing_tensors(tiny_model, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from vlx.checkpoint import save_checkpoint
    from vlx.errors import CheckpointError
    from vlx.interop.plain import export_plain, import_plain

    save_checkpoint(tiny_model, tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"ckpt/config.json: cannot read"):
        import_plain(tmp_path / "ckpt", tmp_path / "x")
    export_plain(tmp_path / "ckpt", tmp_path / "plain")
    weights = tmp_path / "plain" / "model.safetensors"
    tensors = load_file(str(weights))
    del tensors["projector.linear_2.bias"]
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match=r"1 missing: projector.linear_2.bias \(expected \(128,\)\)"):
        import_plain(tmp_path / "plain", tmp_path / "back")
