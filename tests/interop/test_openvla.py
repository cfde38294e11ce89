"""OpenVLA HF checkpoints → vlx: a tiny OpenVLA-layout checkpoint built here imports, and `predict_action`
equals an independent re-implementation of OpenVLA's `predict_action` (modeling_prismatic.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.layers import LayerScale
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

IMAGE, VOCAB_ROWS, PAD_MULTIPLE = 32, 384, 64
TIMM_IDS = ["vit_small_patch14_reg4_dinov2", "vit_so400m_patch14_siglip_224"]
TIMM_KWARGS = [{"patch_size": 8, "embed_dim": 48, "depth": 3, "num_heads": 4, "init_values": 0.5},
               {"patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 4, "mlp_ratio": 2}]
INSTRUCTION = "Pick up the red block"
STATS = {"toy": {"action": {"mean": [0.1, 0.0, 0.5], "std": [1.0, 2.0, 0.5], "min": [-2.0, 0.0, 0.0],
                            "max": [2.0, 4.0, 1.0], "q01": [-1.5, 0.5, 0.0], "q99": [1.5, 3.5, 1.0],
                            "mask": [True, True, False]},
                 "proprio": {"mean": [0.0]}, "num_transitions": 100, "num_trajectories": 5}}


class TinyOpenVLA(nn.Module):
    """OpenVLA's module tree: vision_backbone.featurizer (+ fused_featurizer), projector.fc1..fc3 (fused) or
    fc1, fc2 (single backbone), language_model."""

    def __init__(self, tokenizer, fused: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fused = fused
        self.vision_backbone = nn.Module()
        self.featurizers = [  # a plain list: the modules are registered under vision_backbone only
            timm.create_model(model_id, pretrained=False, num_classes=0, img_size=IMAGE, **kwargs)
            for model_id, kwargs in list(zip(TIMM_IDS, TIMM_KWARGS, strict=True))[: 2 if fused else 1]]
        self.vision_backbone.featurizer = self.featurizers[0]
        if fused:
            self.vision_backbone.fused_featurizer = self.featurizers[1]
        width = sum(m.embed_dim for m in self.featurizers)
        self.projector = nn.Module()
        if fused:
            self.projector.fc1, self.projector.fc2, self.projector.fc3 = (
                nn.Linear(width, 4 * width), nn.Linear(4 * width, 48), nn.Linear(48, 48))
        else:
            self.projector.fc1, self.projector.fc2 = nn.Linear(width, 48), nn.Linear(48, 48)
        self.language_model = LlamaForCausalLM(LlamaConfig(
            hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=VOCAB_ROWS, max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)).eval()
        with torch.no_grad():
            for parameter in self.parameters():
                if parameter.ndim >= 2:
                    parameter.normal_(std=0.2)
            # Only the 256 action tokens get a non-zero output row, so the unconstrained greedy choice of OpenVLA's
            # generate() lies among them (the max of 256 random logits beats the 0 of every other id).
            head = self.language_model.lm_head.weight  # (V, D)
            top = VOCAB_ROWS - PAD_MULTIPLE
            head[:top - 256].zero_()
            head[top:].zero_()
        self.eval()

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """OpenVLA: each featurizer's second-to-last block, prefix tokens dropped, channel-stacked."""
        outs = [m.get_intermediate_layers(p, n={len(m.blocks) - 2})[0]
                for m, p in zip(self.featurizers, torch.split(pixels, 3, dim=1), strict=True)]
        return torch.cat(outs, dim=2)  # (B, N, 112) fused, (B, N, 48) single

    def embeds(self, input_ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        gelu, fc = nn.functional.gelu, self.projector
        hidden = fc.fc2(gelu(fc.fc1(self.features(pixels))))
        patches = fc.fc3(gelu(hidden)) if self.fused else hidden  # (B, N, 48)
        tokens = self.language_model.get_input_embeddings()(input_ids)  # (1, L, D)
        return torch.cat([tokens[:, :1], patches, tokens[:, 1:]], dim=1)  # patches right after BOS

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict under OpenVLA's HF names: LayerScale `gamma` → `scale_factor` (ls_apply_patch)."""
        layer_scales = {name for name, module in self.named_modules() if isinstance(module, LayerScale)}
        state = self.state_dict()
        assert layer_scales  # the DINOv2 member has LayerScale, as the real one
        return {(name[: -len("gamma")] + "scale_factor" if name.rsplit(".", 1)[0] in layer_scales
                 else name): t.contiguous() for name, t in state.items()}


def pixels_of(image: np.ndarray, model: nn.Module) -> torch.Tensor:
    """(3, S, S) pixels as timm's data config normalises them (the image is already S × S)."""
    config = timm.data.resolve_data_config({}, model=model)
    mean, std = np.array(config["mean"]), np.array(config["std"])
    return torch.tensor(((image / 255.0 - mean) / std).transpose(2, 0, 1), dtype=torch.float32)


def reference_predict_action(vla: TinyOpenVLA, tokenizer, image: np.ndarray, space_id: int) -> tuple[np.ndarray, list]:
    """OpenVLA's predict_action: prompt (+ 29871-equivalent), unconstrained greedy generate, bin centres,
    un-normalise."""
    prompt = f"In: What action should the robot take to {INSTRUCTION.lower()}?\nOut:"
    ids = tokenizer(prompt)["input_ids"]
    if ids[-1] != space_id:
        ids = [*ids, space_id]
    pixels = torch.cat([pixels_of(image, m) for m in vla.featurizers])
    action = STATS["toy"]["action"]
    with torch.no_grad():
        embeds = vla.embeds(torch.tensor([ids]), pixels[None])
        out = vla.language_model.generate(inputs_embeds=embeds,
                                          attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                          max_new_tokens=len(action["q01"]), do_sample=False, eos_token_id=None,
                                          pad_token_id=tokenizer.pad_token_id)
    tokens = out[0].numpy()
    bins = np.linspace(-1, 1, 256)
    centers = (bins[:-1] + bins[1:]) / 2.0
    discretized = np.clip((VOCAB_ROWS - PAD_MULTIPLE) - tokens - 1, 0, centers.shape[0] - 1)
    normalized = centers[discretized]
    high, low, mask = np.array(action["q99"]), np.array(action["q01"]), np.array(action["mask"])
    actions = np.where(mask, 0.5 * (normalized + 1) * (high - low) + low, normalized)
    return actions, ids, tokens.tolist()


def openvla_config(vla: TinyOpenVLA) -> dict:
    count = len(vla.featurizers)
    return {
        "model_type": "openvla", "architectures": ["OpenVLAForActionPrediction"],
        "vision_backbone_id": "dinosiglip-vit-so-224px" if vla.fused else "dinov2-vit-l",
        "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp" if vla.fused else "no-align+gelu-mlp",
        "use_fused_vision_backbone": vla.fused,
        "image_resize_strategy": "resize-naive", "text_config": vla.language_model.config.to_dict(),
        "llm_max_length": 2048, "pad_token_id": vla.language_model.config.pad_token_id,
        "pad_to_multiple_of": PAD_MULTIPLE,
        "timm_model_ids": TIMM_IDS[:count], "timm_override_act_layers": [None] * count, "image_sizes": [IMAGE] * count,
        "timm_model_kwargs": TIMM_KWARGS[:count], "norm_stats": STATS, "n_action_bins": 256,
        "output_projector_states": False,
    }


def write_openvla(vla: TinyOpenVLA, tokenizer, directory: Path) -> Path:
    """Save `vla` as OpenVLA's HF export does: safetensors under its module names, config.json, tokenizer."""
    save_file(vla.hf_state_dict(), str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(openvla_config(vla)))
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def openvla_dir(llava_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyOpenVLA]:
    directory = tmp_path_factory.mktemp("openvla")
    vla = TinyOpenVLA(llava_tokenizer)
    return write_openvla(vla, llava_tokenizer, directory), vla


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "single"])
def test_predict_action_equals_openvla_reference(fused: bool, openvla_dir, llava_tokenizer, tmp_path: Path) -> None:
    import vlx
    from vlx.heads.instruction import vla_question
    from vlx.interop.openvla import import_openvla

    directory, vla = openvla_dir
    if not fused:
        vla = TinyOpenVLA(llava_tokenizer, fused=False)
        (tmp_path / "single").mkdir()
        directory = write_openvla(vla, llava_tokenizer, tmp_path / "single")
    import_openvla(directory, tmp_path / "ckpt")
    model = vlx.load(tmp_path / "ckpt")
    space_id = llava_tokenizer.convert_tokens_to_ids("▁")
    image = np.random.default_rng(3).integers(0, 256, size=(IMAGE, IMAGE, 3), dtype=np.uint8)
    expected, reference_ids, tokens = reference_predict_action(vla, llava_tokenizer, image, space_id)
    top = VOCAB_ROWS - PAD_MULTIPLE
    assert all(top - 256 <= t < top for t in tokens)  # OpenVLA's unconstrained choice is an action token here
    assert len(set(tokens)) > 1
    # vlx's prompt: BOS, one slot per patch, then exactly OpenVLA's prompt ids (29871-equivalent included)
    ids = model.prompt_ids(vla_question(INSTRUCTION), has_image=True).tolist()
    patches = model.vision.num_patches
    assert ids[:1] + ids[1 + patches:] == reference_ids and ids[-1] == space_id
    # same logits over the whole sequence
    pixels = model.vision.image_transform(Image.fromarray(image))
    reference_pixels = torch.cat([pixels_of(image, m) for m in vla.featurizers])
    assert torch.allclose(pixels, reference_pixels, atol=1e-6)
    with torch.no_grad():
        ours = model.llm(model.embed(torch.tensor([ids]), pixels[None]), torch.ones(1, len(ids), dtype=torch.long))
        theirs = vla.language_model(
            inputs_embeds=vla.embeds(torch.tensor([reference_ids]), reference_pixels[None])).logits
    # float32 kernels on an AVX-512 CPU differ by up to 1.3e-5 between the two call paths (both ~1e-6 elsewhere)
    assert (ours - theirs).abs().max().item() <= 1e-4
    actions = model.predict_action(image, INSTRUCTION, unnorm_key="toy")
    np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-6)
    assert actions[2] == np.float32(expected[2])  # the unmasked gripper passes through as the bin centre itself


def test_import_config_and_stats(openvla_dir, tmp_path: Path) -> None:
    import vlx
    from vlx.interop.openvla import import_openvla

    directory, _ = openvla_dir
    import_openvla(directory, tmp_path / "ckpt")
    model = vlx.load(tmp_path / "ckpt")
    assert model.config["head"] == {"name": "action-tokens", "action_dim": 3, "n_bins": 256, "tokens": "reuse-last",
                                    "base_vocab_size": VOCAB_ROWS - PAD_MULTIPLE}
    assert model.action_head.codec.first_id == VOCAB_ROWS - PAD_MULTIPLE - 256
    assert model.unnorm_keys == ["toy"]
    np.testing.assert_array_equal(model.action_stats["toy"].q99, np.float32([1.5, 3.5, 1.0]))
    assert model.action_stats["toy"].mask.tolist() == [True, True, False]
    assert model.vision.embed_dim == 112 and model.vision.num_patches == 16


def test_missing_and_mismatched_tensors_are_listed(openvla_dir, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from vlx.errors import CheckpointError
    from vlx.interop.openvla import import_openvla

    directory, _ = openvla_dir
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((directory / name).read_bytes())
    tensors = load_file(str(directory / "model.safetensors"))
    del tensors["projector.fc3.bias"]
    tensors["vision_backbone.fused_featurizer.pos_embed"] = torch.zeros(1, 5, 64)
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        import_openvla(broken, tmp_path / "ckpt")
    message = str(error.value)
    assert str(broken) in message
    assert "1 missing: projector.fc3.bias (expected (48,))" in message
    assert "vision.members.1.model.pos_embed is (1, 5, 64), expected (1, 16, 64)" in message


def test_inconsistent_config_is_refused(openvla_dir, tmp_path: Path) -> None:
    from vlx.errors import CheckpointError
    from vlx.interop.openvla import import_openvla

    directory, vla = openvla_dir
    for change, pattern in [
        ({"model_type": "llava"}, r"model_type='llava'; expected one of \['openvla', 'prismatic'\]"),
        ({"norm_stats": None}, r"lacks \['norm_stats'\]"),
        ({"timm_model_ids": TIMM_IDS[:1]}, r"must each have 2 entries"),
        ({"norm_stats": {**STATS, "other": {"action": {**STATS["toy"]["action"], "q01": [0.0], "q99": [1.0],
                                                       "mean": [0.0], "std": [1.0], "min": [0.0], "max": [1.0],
                                                       "mask": [True]}}}},
         r"same action dimension.*'toy': 3, 'other': 1"),
    ]:
        bad = tmp_path / f"bad-{len(list(tmp_path.iterdir()))}"
        bad.mkdir()
        for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            (bad / name).symlink_to(directory / name)
        (bad / "config.json").write_text(json.dumps({**openvla_config(vla), **change}))
        with pytest.raises(CheckpointError, match=pattern):
            import_openvla(bad, tmp_path / "ckpt")


def test_imported_openvla_fine_tunes_with_lora_on_robot_demos(openvla_dir, llava_tokenizer, tmp_path: Path) -> None:
    """The import is a vlx VLA: robomimic samples end their prompt with the `▁` token, LoRA trains only the
    adapters and projector, and the loss falls."""
    import vlx
    from vlx.data.collate import Collator
    from vlx.envs import record_demos
    from vlx.interop.openvla import import_openvla
    from vlx.training.datamodule import build_dataset
    from vlx.training.lora import add_lora
    from vlx.training.stages import apply_stage

    directory, _ = openvla_dir
    model = vlx.load(import_openvla(directory, tmp_path / "ckpt"))
    demos = record_demos(tmp_path / "demos.hdf5", num_demos=4, seed=0).path
    data = build_dataset({"name": "robomimic-hdf5",
                          "datasets": [{"key": "reach", "path": str(demos), "filter_key": "train"}]},
                         "data.train", model, training=True)
    item = data[0]
    assert item["input_ids"][-5] == llava_tokenizer.convert_tokens_to_ids("▁")  # prompt … Out: ▁ | 3 actions | EOS
    assert sorted(model.action_stats) == ["reach", "toy"]
    frozen = {name: p.detach().clone() for name, p in model.llm.model.named_parameters()}
    apply_stage(model, ["projector"], allow_none=True)
    add_lora(model, {"r": 4, "alpha": 8}, "stages.vla.lora")
    batch = Collator(model.tokenizer.pad_token_id)([data[i] for i in range(8)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    losses = []
    for _ in range(6):
        loss = model(batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    for name, p in model.llm.model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, frozen[name.removeprefix("base_model.model.").replace(".base_layer", "")]), name


def test_prismatic_checkpoint_imports_as_a_text_model(openvla_dir, llava_tokenizer, tmp_path: Path) -> None:
    import vlx
    from vlx.interop.openvla import import_openvla

    directory, vla = openvla_dir
    source = tmp_path / "prismatic"
    source.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (source / name).symlink_to(directory / name)
    config = {k: v for k, v in openvla_config(vla).items() if k not in ("norm_stats", "n_action_bins")}
    (source / "config.json").write_text(json.dumps({**config, "model_type": "prismatic"}))
    model = vlx.load(import_openvla(source, tmp_path / "ckpt"))
    assert model.config["head"] == {"name": "text"} and model.action_stats == {}
    # no 29871: only OpenVLA appends it
    assert model.config["prompt"] == {"name": "pure", "image_placement": "after-bos"}
    image = Image.fromarray(np.zeros((IMAGE, IMAGE, 3), dtype=np.uint8))
    ids = model.prompt_ids("What is here?", has_image=True)
    pixels = model.vision.image_transform(image)
    reference_ids = llava_tokenizer("In: What is here?\nOut:")["input_ids"]
    assert ids[:1].tolist() + ids[1 + model.vision.num_patches:].tolist() == reference_ids
    with torch.no_grad():
        ours = model.llm(model.embed(ids[None], pixels[None]), torch.ones(1, len(ids), dtype=torch.long))
        theirs = vla.language_model(inputs_embeds=vla.embeds(torch.tensor([reference_ids]), pixels[None])).logits
    assert (ours - theirs).abs().max().item() <= 1e-5


@pytest.mark.parametrize(("llm_backbone_id", "prompt"), [
    ("llama2-7b-pure", "pure"), ("vicuna-v15-7b", "prismatic-vicuna"), ("llama2-7b-chat", "prismatic-llama2-chat"),
    ("mistral-v0.1-7b-instruct", "prismatic-mistral-instruct")])
def test_prismatic_prompt_builders_map_to_their_formats(llm_backbone_id: str, prompt: str, tmp_path: Path) -> None:
    """Prismatic's LLM backbone ids pick its prompt builders (prismatic/models/backbones/llm/*.py)."""
    from vlx.interop.openvla import prompt_node

    config = {"model_type": "prismatic", "llm_backbone_id": llm_backbone_id}
    assert prompt_node(config, tmp_path) == {"name": prompt, "image_placement": "after-bos"}


def test_unknown_prismatic_llm_is_a_clear_error(tmp_path: Path) -> None:
    from vlx.errors import CheckpointError
    from vlx.interop.openvla import prompt_node

    with pytest.raises(CheckpointError, match=r"config.json: no vlx prompt format for llm_backbone_id='gemma-2b'"):
        prompt_node({"model_type": "prismatic", "llm_backbone_id": "gemma-2b"}, tmp_path)


@pytest.mark.parametrize(("strategy", "expected"), [
    ("letterbox", "letterbox-prismatic"), ("resize-naive", "resize-naive"), ("resize-crop", "resize-crop")])
def test_prismatic_resize_strategies_keep_prismatics_padding(strategy: str, expected: str, tmp_path: Path) -> None:
    """Prismatic's `letterbox` is its symmetric LetterboxPad, not LLaVA's expand2square (tests/vision)."""
    from vlx.interop.openvla import vision_node

    config = {"vision_backbone_id": "dinosiglip-vit-so-224px", "image_resize_strategy": strategy,
              "timm_model_ids": TIMM_IDS, "image_sizes": [224, 224]}
    node = vision_node(config, tmp_path)
    assert [member["image_resize"] for member in node["members"]] == [expected, expected]
