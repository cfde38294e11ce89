"""Hydra composition: every recipe composes, builds on the meta device, and has the documented size."""

from __future__ import annotations

import pytest
import torch

from vlx.builder import build_model, to_plain
from vlx.cli.report import print_info
from vlx.config import compose, recipe_names


def test_recipes_are_found():
    assert {"llava-tiny", "llava-v1.5-7b", "prism-dinosiglip-224px-7b", "prism-dinosiglip-7b"} <= set(recipe_names())


@pytest.mark.parametrize("recipe", ["llava-tiny", "llava-v1.5-7b"])
def test_every_recipe_composes_with_two_stages(recipe):
    cfg = compose([f"recipe={recipe}"])
    assert list(cfg.train.stages) == ["align", "finetune"]
    assert list(cfg.stages.align.trainable) == ["projector"]
    assert list(cfg.stages.finetune.trainable) == ["projector", "llm"]
    assert cfg.stages.align.prompt.name == "plain" and cfg.stages.finetune.prompt.name == "vicuna"


def test_llava_v15_7b_matches_the_published_hyperparameters():
    cfg = compose(["recipe=llava-v1.5-7b"])
    assert cfg.vision.source == "openai/clip-vit-large-patch14-336" and cfg.vision.feature_layer == -2
    assert cfg.vision.image_resize == "letterbox" and cfg.projector.name == "mlp"
    assert cfg.llm.source == "lmsys/vicuna-7b-v1.5"
    align, finetune = cfg.stages.align, cfg.stages.finetune
    assert (align.lr, align.global_batch_size, align.epochs) == (1e-3, 256, 1)
    assert (finetune.lr, finetune.global_batch_size, finetune.epochs) == (2e-5, 128, 1)
    assert align.warmup_ratio == finetune.warmup_ratio == 0.03
    assert align.schedule == finetune.schedule == "cosine"


def test_llava_v15_7b_has_the_transformers_parameter_count(capsys):
    counts = print_info(compose(["recipe=llava-v1.5-7b"]))
    assert counts["total"] == 7_063_427_072
    assert counts["vision_total"] == 303_507_456 and counts["projector_total"] == 20_979_712
    assert counts["trainable"] == counts["total"] - counts["vision_total"]  # finetune: vision frozen
    assert "params_total=7063427072" in capsys.readouterr().out


def test_overrides_change_the_built_model():
    cfg = to_plain(compose(["recipe=llava-tiny", "projector=linear"]))
    with torch.device("meta"):
        model = build_model({**cfg, "prompt": {"name": "plain"}}, load_weights=False, load_tokenizer=False)
    assert type(model.projector).__name__ == "LinearProjector"
    assert model.projector.linear_1.in_features == cfg["vision"]["config"]["hidden_size"]
    assert model.projector.linear_1.out_features == cfg["llm"]["config"]["hidden_size"]


@pytest.mark.parametrize("recipe, vision, patches", [
    ("prism-dinosiglip-224px-7b", "dinosiglip-224px", 256), ("prism-dinosiglip-7b", "dinosiglip-384px", 729)])
def test_prism_recipes_match_prismatic(recipe, vision, patches, capsys):
    cfg = compose([f"recipe={recipe}"])
    assert cfg.vision.name == vision and cfg.projector.name == "fused-mlp"
    assert cfg.llm.source == "meta-llama/Llama-2-7b-hf" and list(cfg.train.stages) == ["finetune"]
    stage = cfg.stages.finetune
    assert (stage.epochs, stage.lr, stage.global_batch_size, stage.weight_decay) == (2, 2e-5, 128, 0.1)
    assert (stage.warmup_ratio, stage.schedule, stage.max_grad_norm) == (0.03, "cosine", 1.0)
    assert stage.prompt.name == "pure" and stage.prompt.image_placement == "after-bos"
    counts = print_info(cfg)
    if recipe == "prism-dinosiglip-224px-7b":
        assert counts["total"] == 7_541_237_184  # OpenVLA-7B / Prism-DINOSigLIP-224px-7B
        assert "params_total=7541237184" in capsys.readouterr().out
    assert counts["vision_total"] == EXPECTED_VISION[vision]


EXPECTED_VISION = {"dinosiglip-224px": 730_911_680, "dinosiglip-384px": 731_940_928}


def test_openvla_7b_recipe(capsys):
    cfg = compose(["recipe=openvla-7b", "robot_data=/data/demos.hdf5"])
    assert cfg.vision.name == "dinosiglip-224px" and cfg.head.name == "action-tokens"
    assert ((cfg.head.action_dim, cfg.head.n_bins, cfg.head.tokens, cfg.head.base_vocab_size)
            == (7, 256, "reuse-last", 32000))
    stage = cfg.stages.vla
    assert (list(stage.trainable) == ["vision", "projector", "proprio", "llm", "head"]
            and list(cfg.train.stages) == ["vla"])
    assert (stage.lr, stage.schedule, stage.global_batch_size) == (2e-5, "constant", 256)
    assert (cfg.augment.crop_scale, cfg.augment.color_jitter) == (0.9, True)
    assert list(stage.prompt.generation_suffix_ids) == [29871]  # OpenVLA's prompts end with Llama-2's `▁`
    assert stage.data.train.datasets[0].path == "/data/demos.hdf5"
    counts = print_info(cfg)
    assert counts["total"] == 7_541_237_184 and "params_total=7541237184" in capsys.readouterr().out
    lora = print_info(compose(["recipe=openvla-7b", "stage@stages.vla=lora"]))
    assert lora["trainable"] == 71_385_600 + 79_953_920  # projector + LoRA r=32 on every linear layer of Llama-2-7B


def differing_keys(a: dict, b: dict, prefix: str = "") -> set[str]:
    """The dotted keys whose values differ between two plain configs (a key present in one only counts)."""
    keys = set()
    for key in set(a) | set(b):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            keys |= differing_keys(left, right, f"{prefix}{key}.")
        elif left != right or (key in a) != (key in b):
            keys.add(f"{prefix}{key}")
    return keys


def test_configs_that_build_on_others_differ_only_where_they_say():
    """prism-dinosiglip-7b is the 224 px recipe at 384 px; vicuna-7b-v1.5 is Llama-2-7B with its own weights and
    pad token; the GPU trainers differ from the CPU defaults only in device, precision and strategy."""
    def plain(*overrides: str) -> dict:
        return to_plain(compose(["run_name=x", *overrides]))

    wide, narrow = plain("recipe=prism-dinosiglip-7b", "data_root=/d"), plain("recipe=prism-dinosiglip-224px-7b",
                                                                              "data_root=/d")
    assert {key.split(".")[0] for key in differing_keys(wide, narrow)} == {"vision"}
    assert (wide["vision"]["name"], narrow["vision"]["name"]) == ("dinosiglip-384px", "dinosiglip-224px")
    vicuna, llama = plain("recipe=llava-tiny", "llm=vicuna-7b-v1.5")["llm"], plain("recipe=llava-tiny", "llm=llama2-7b")
    assert differing_keys(vicuna, llama["llm"]) == {"source", "pad_token"}
    cpu = plain("recipe=llava-tiny", "trainer=cpu")["trainer"]
    assert differing_keys(plain("recipe=llava-tiny", "trainer=gpu")["trainer"], cpu) == {"accelerator", "precision"}
    fsdp = plain("recipe=llava-tiny", "trainer=fsdp")["trainer"]
    top = {key.split(".")[0] for key in differing_keys(fsdp, cpu)}
    assert top == {"accelerator", "precision", "devices", "strategy"}


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_composes_and_builds_on_the_meta_device(recipe, capsys):
    """Each recipe file composes (typed nodes checked) and its model builds on the meta device with the parts its
    last stage trains; the counts printed are the model's own."""
    cfg = compose([f"recipe={recipe}"])
    assert cfg.train.stages and all(name in cfg.stages for name in cfg.train.stages)
    counts = print_info(cfg)
    assert 0 < counts["trainable"] <= counts["total"] and counts["total"] == sum(
        counts[f"{part}_total"] for part in ("vision", "projector", "proprio", "llm", "head"))
    assert f"params_total={counts['total']}" in capsys.readouterr().out


def test_vision_presets_are_config_options_with_the_builders_own_defaults():
    """Each named timm/fused backbone is a `vision=NAME` option made from vlx/vision_preset_table.py; its keys are the
    registered builder's parameters with the builder's defaults, and they are overridable without `+`."""
    import inspect

    from vlx.registry import VISION_BACKBONES
    from vlx.vision_preset_table import preset_configs

    assert {"clip-vit-l", "dinov2-vit-l", "dinosiglip-224px", "dinosiglip-384px"} <= set(preset_configs())
    for name in preset_configs():
        node = to_plain(compose(["recipe=llava-tiny", f"vision={name}"])["vision"])
        parameters = inspect.signature(VISION_BACKBONES.get(name, where="vision.name")).parameters
        defaults = {key: p.default for key, p in parameters.items() if key != "load_weights"}
        assert node == {"name": name, **defaults}, name
    local = compose(["recipe=llava-tiny", "vision=dinov2-vit-l", "vision.weights_file=/w/dinov2.safetensors"])
    assert local.vision.weights_file == "/w/dinov2.safetensors" and local.vision.pretrained is True
