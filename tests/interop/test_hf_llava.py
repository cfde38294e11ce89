"""transformers LLaVA ↔ vlx: logits within 1e-5 (fp32) and identical greedy tokens both ways; 4.x names; errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

QUESTION = "What colour is the square?"
NEW_TOKENS = 8


def sample_image() -> Image.Image:
    """A 20 × 12 RGB image (not square, so the letterbox padding is exercised)."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def vlx_inputs(model, question: str = QUESTION):
    """vlx's prompt ids (image slot expanded), its text rendering and its pixels for the test image."""
    ids = model.prompt_ids(question, has_image=True)  # (L,)
    return ids, model.vision.image_transform(sample_image())


def hf_inputs(processor, tokenizer, vlx_ids: torch.Tensor) -> dict:
    """The processor's inputs for the same prompt text that vlx's ids spell (the image tokens collapsed)."""
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    ids = vlx_ids.tolist()
    first = ids.index(image_id)
    collapsed = ids[:first] + [image_id] + [i for i in ids[first:] if i != image_id]
    text = tokenizer.decode(collapsed[1:])  # without BOS: the processor's tokenizer adds it
    return processor(text=text, images=sample_image(), return_tensors="pt")


def roughen(model: torch.nn.Module) -> torch.nn.Module:
    """Redraw the weight matrices with std 0.2 (random init's 0.02 makes greedy decoding repeat one token)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.normal_(std=0.2)
    return model


def vlx_logits(model, ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        embeds = model.embed(ids[None], pixels[None])  # (1, L, D)
        return model.llm(embeds, torch.ones_like(ids)[None])  # (1, L, V)


def vlx_greedy(model, ids: torch.Tensor, pixels: torch.Tensor) -> list[int]:
    with torch.no_grad():
        embeds = model.embed(ids[None], pixels[None])
        out = model.llm.model.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(ids)[None],
                                       max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None,
                                       pad_token_id=model.tokenizer.pad_token_id)
    return out[0].tolist()


def hf_greedy(hf, inputs: dict) -> list[int]:
    with torch.no_grad():
        out = hf.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def assert_parity(model, hf, processor, tokenizer) -> None:
    """Same ids, same pixels → logits within 1e-5 everywhere and the same greedy tokens."""
    ids, vlx_pixels = vlx_inputs(model)
    inputs = hf_inputs(processor, tokenizer, ids)
    assert inputs["input_ids"][0].tolist() == ids.tolist()  # identical input sequences, image tokens included
    assert torch.allclose(vlx_pixels, inputs["pixel_values"][0], atol=2e-2)  # the transforms agree up to resampling
    pixels = inputs["pixel_values"][0]
    with torch.no_grad():
        reference = hf(**inputs).logits  # (1, L, V)
    ours = vlx_logits(model, ids, pixels)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() <= 1e-5
    greedy = hf_greedy(hf, inputs)
    assert len(greedy) == NEW_TOKENS and len(set(greedy)) > 1  # a non-trivial path
    assert vlx_greedy(model, ids, pixels) == greedy


def test_import_matches_transformers(hf_llava_dir: Path, llava_tokenizer, tmp_path: Path) -> None:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    import vlx
    from vlx.interop.hf_llava import import_hf_llava

    import_hf_llava(hf_llava_dir, tmp_path / "ckpt")
    model = vlx.load(tmp_path / "ckpt")
    assert model.config["vision"]["image_resize"] == "letterbox" and model.config["projector"]["name"] == "mlp"
    hf = LlavaForConditionalGeneration.from_pretrained(hf_llava_dir).eval()
    assert_parity(model, hf, AutoProcessor.from_pretrained(hf_llava_dir), llava_tokenizer)


LAYOUTS = {  # how each transformers version names the parameters of the saved fixture (see docs/formats.md)
    "5.x-runtime": [("vision_tower.", "model.vision_tower."),
                    ("multi_modal_projector.", "model.multi_modal_projector."),
                    ("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head.")],
    "4.x": [("vision_tower.", "vision_tower.vision_model.")],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_import_accepts_other_parameter_names(layout: str, hf_llava_dir: Path, llava_tokenizer, tmp_path: Path) -> None:
    import shutil

    from transformers import AutoProcessor, LlavaForConditionalGeneration

    import vlx
    from vlx.interop.hf_llava import import_hf_llava

    renamed = tmp_path / "renamed"
    shutil.copytree(hf_llava_dir, renamed)
    # transformers 5.24 saves language_model.model.*, vision_tower.*
    saved = load_file(str(renamed / "model.safetensors"))
    tensors = {}
    for name, tensor in saved.items():
        for old, new in LAYOUTS[layout]:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        tensors[name] = tensor
    assert set(tensors) != set(saved)
    save_file(tensors, str(renamed / "model.safetensors"))
    import_hf_llava(renamed, tmp_path / "ckpt")
    hf = LlavaForConditionalGeneration.from_pretrained(hf_llava_dir).eval()
    assert_parity(vlx.load(tmp_path / "ckpt"), hf, AutoProcessor.from_pretrained(hf_llava_dir), llava_tokenizer)


def test_export_opens_in_transformers(tiny_model, llava_tokenizer, tmp_path: Path) -> None:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from vlx.checkpoint import save_checkpoint
    from vlx.interop.hf_llava import export_hf_llava

    roughen(tiny_model)
    save_checkpoint(tiny_model, tmp_path / "ckpt")
    export_hf_llava(tmp_path / "ckpt", tmp_path / "hf")
    hf, info = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    assert_parity(tiny_model.eval(), hf.eval(), processor, tiny_model.tokenizer)


def test_export_of_a_linear_projector_round_trips(tiny_cfg: dict, tmp_path: Path) -> None:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    import vlx
    from vlx.builder import build_model
    from vlx.checkpoint import save_checkpoint
    from vlx.interop.hf_llava import export_hf_llava, import_hf_llava

    model = roughen(build_model({**tiny_cfg, "projector": {"name": "linear"}, "prompt": {"name": "vicuna"}}).eval())
    save_checkpoint(model, tmp_path / "ckpt")
    export_hf_llava(tmp_path / "ckpt", tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["projector_hidden_act"] == "linear"
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert_parity(model, hf, AutoProcessor.from_pretrained(tmp_path / "hf"), model.tokenizer)
    import_hf_llava(tmp_path / "hf", tmp_path / "back")
    back = vlx.load(tmp_path / "back")
    assert back.config["projector"]["name"] == "linear"
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_export_refuses_fused_backbones(tiny_vla, tmp_path: Path) -> None:
    from vlx.builder import build_model, to_plain
    from vlx.checkpoint import save_checkpoint
    from vlx.config import compose
    from vlx.data.tiny_assets import write_tiny_assets
    from vlx.errors import CheckpointError
    from vlx.interop.hf_llava import export_hf_llava

    cfg = to_plain(compose(["recipe=prismatic-tiny", f"paths.home={tmp_path}", "logger=none"]))
    write_tiny_assets(cfg["vision"], cfg["llm"])
    save_checkpoint(build_model({**cfg, "prompt": {"name": "pure", "image_placement": "after-bos"}}), tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"vision backbone 'fused' cannot be exported to transformers LLaVA"):
        export_hf_llava(tmp_path / "ckpt", tmp_path / "hf")
    save_checkpoint(tiny_vla, tmp_path / "vla")
    with pytest.raises(CheckpointError, match=r"head 'action-tokens' has no LLaVA equivalent"):
        export_hf_llava(tmp_path / "vla", tmp_path / "hf2")


def test_mismatched_tensors_are_listed_with_expected_shapes(hf_llava_dir: Path, tmp_path: Path) -> None:
    import shutil

    from vlx.errors import CheckpointError
    from vlx.interop.hf_llava import import_hf_llava

    broken = tmp_path / "broken"
    shutil.copytree(hf_llava_dir, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["language_model.model.norm.weight"]
    tensors["vision_tower.post_layernorm.weight"] = torch.zeros(7)
    tensors["model.extra.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        import_hf_llava(broken, tmp_path / "ckpt")
    message = str(error.value)
    assert str(broken) in message
    assert "1 missing: llm.model.model.norm.weight (expected (48,))" in message
    assert "vision.model.post_layernorm.weight is (7,), expected (32,)" in message
    assert "1 unexpected: model.extra.weight (2, 2)" in message
    assert not (tmp_path / "ckpt").exists()
