"""`compile.parts`: parts compiled in place keep their parameter names and compute the same loss."""

from __future__ import annotations

import pytest
import torch

from vlx.data.collate import Collator
from vlx.errors import ConfigError
from vlx.training.compilation import compile_parts
from vlx.training.datamodule import build_dataset


def test_compiled_parts_keep_names_and_loss(tiny_model, shapes):
    dataset = build_dataset({"name": "llava-json", "json_path": str(shapes.questions("train")),
                             "image_dir": str(shapes.image_dir)}, "data.train", tiny_model, training=True)
    batch = Collator(tiny_model.tokenizer.pad_token_id)([dataset[i] for i in range(4)])
    names = list(tiny_model.state_dict())
    with torch.no_grad():
        expected = tiny_model(batch).loss
    assert compile_parts(tiny_model, {"parts": ["projector", "llm"], "backend": "aot_eager"}) == ["projector", "llm"]
    assert tiny_model.llm._compiled_call_impl is not None and tiny_model.vision._compiled_call_impl is None
    assert list(tiny_model.state_dict()) == names  # checkpoints and freezing see the same parameters
    loss = tiny_model(batch).loss
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()  # gradients flow through the compiled parts
    assert tiny_model.projector.parameters().__next__().grad is not None


def test_nothing_is_compiled_by_default_and_unknown_parts_are_named(tiny_model):
    assert compile_parts(tiny_model, {"parts": [], "backend": "inductor"}) == []
    assert compile_parts(tiny_model, None) == []
    with pytest.raises(ConfigError, match=r"compile.parts names unknown parts \['vison'\]; expected some of vision"):
        compile_parts(tiny_model, {"parts": ["vison"]})
