"""The cases of docs/errors.md that no component test covers — an all-masked sample, a projector width that
does not fit the backbone, unset mandatory values, `_target_`s, broken checkpoints, pickled weights — plus
the safe-loading audit of vlx's sources and a check that every case in docs/errors.md names a real test."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vlx.builder import build_model, to_plain
from vlx.checkpoint import load, save_checkpoint
from vlx.config import compose
from vlx.data.llava_json import LlavaJsonDataset
from vlx.errors import CheckpointError, ConfigError, DataError
from vlx.llm.prompts import PromptFormat, Segment, Turn
from vlx.vision.transforms import build_image_transform

ROOT = Path(__file__).resolve().parents[1]


class NoTargetFormat(PromptFormat):
    """A (broken) prompt format that marks no segment as a loss target, as a buggy plugin might."""

    def render(self, turns: list[Turn], eos: str) -> list[Segment]:
        return [Segment(turn.text + " ") for turn in turns]


def test_all_masked_sample_names_file_and_sample(tmp_path, tokenizer) -> None:
    Image.new("L", (8, 8), 3).save(tmp_path / "gray.png")
    path = tmp_path / "masked.json"
    path.write_text(json.dumps([{"id": "masked-0", "image": "gray.png", "conversations": [
        {"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}]), encoding="utf-8")
    with pytest.raises(DataError) as info:
        LlavaJsonDataset(str(path), str(tmp_path), NoTargetFormat(), tokenizer,
                         build_image_transform("letterbox", 16, (0.5,) * 3, (0.5,) * 3), num_image_tokens=4)
    assert str(info.value) == f"{path}: sample masked-0: every label is masked (no assistant answer would be trained)"
    assert info.value.kind == "all-masked"


def _sizing_cfg(*overrides: str) -> dict:
    config = compose(list(overrides))
    return {key: to_plain(config[key]) for key in ("vision", "projector", "llm", "head")} | {"prompt": {"name": "pure"}}


def test_fused_mlp_recipe_on_a_single_backbone_of_the_wrong_width_names_the_key() -> None:
    cfg = _sizing_cfg("recipe=prismatic-tiny", "vision=tiny-clip")
    with pytest.raises(ConfigError) as info, torch.device("meta"):
        build_model(cfg, load_weights=False, load_tokenizer=False)
    assert str(info.value) == (
        "config key 'projector.in_dim'=112: the fused-mlp projector was set up for 112-wide features, but the vision "
        "backbone 'hf-clip' (config key 'vision') has width 64; pick a vision backbone of width 112 (fused-mlp expects "
        "a fused backbone such as dinosiglip) or remove projector.in_dim")
    assert info.value.kind == "projector-width"
    for recipe in ("prism-dinosiglip-224px-7b", "prism-dinosiglip-7b", "openvla-7b"):  # the 7B recipes state it too
        assert _sizing_cfg(f"recipe={recipe}")["projector"] == {"name": "fused-mlp", "in_dim": 2176, "out_dim": 4096}


def test_stated_widths_that_agree_build_the_projector() -> None:
    with torch.device("meta"):
        model = build_model(_sizing_cfg("recipe=prismatic-tiny"), load_weights=False, load_tokenizer=False)
    assert (model.projector.fc1.in_features, model.projector.fc3.out_features) == (112, 128)


def test_unset_mandatory_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        to_plain(compose(["recipe=openvla-7b"]).stages)
    assert re.fullmatch(r"config key 'robot_data' \(used by '[\w.\[\]]+'\) must be set: add robot_data=\.\.\. to the "
                        r"command line", str(info.value)), str(info.value)


def test_hydra_target_is_refused_in_a_config_and_in_a_checkpoint(tiny_model, tiny_cfg, tmp_path) -> None:
    cfg = {**tiny_cfg, "prompt": {"name": "vicuna"}, "projector": {"name": "mlp", "_target_": "os.system"}}
    with pytest.raises(ConfigError, match=r"^config key 'projector._target_'='os.system': vlx builds parts only from "
                                          r"its registries"):
        build_model(cfg, load_weights=False)
    directory = save_checkpoint(tiny_model, tmp_path / "ckpt")
    config = (directory / "config.yaml").read_text(encoding="utf-8")
    (directory / "config.yaml").write_text(config.replace("vision:\n", "vision:\n  _target_: builtins.exec\n", 1))
    with pytest.raises(CheckpointError) as info:
        load(directory)
    assert str(info.value).startswith(f"{directory / 'config.yaml'}: config key 'vision._target_'='builtins.exec'")


def test_checkpoint_weights_of_another_shape_name_the_tensor(tiny_model, tmp_path) -> None:
    directory = save_checkpoint(tiny_model, tmp_path / "ckpt")
    weights = directory / "model.safetensors"
    tensors = load_file(weights)
    tensors["projector.linear_1.weight"] = torch.zeros(128, 112)  # a projector saved for a 112-wide backbone
    save_file(tensors, weights)
    expected = list(tiny_model.projector.linear_1.weight.shape)
    with pytest.raises(CheckpointError) as info:
        load(directory)
    assert str(info.value) == (
        f"{weights}: tensor 'projector.linear_1.weight' has shape [128, 112] but the model described by "
        f"{directory / 'config.yaml'} needs {expected}; the weights and config.yaml do not belong together")


def test_corrupt_checkpoint_files_name_the_file(tiny_model, tmp_path) -> None:
    directory = save_checkpoint(tiny_model, tmp_path / "ckpt")
    (directory / "model.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(directory / 'model.safetensors'))} is not a readable "
                                              "safetensors file"):
        load(directory)
    (directory / "config.yaml").write_text("vision: [unclosed\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(directory / 'config.yaml'))} is not a readable vlx "
                                              "config"):
        load(directory)


def test_invalid_action_statistics_name_the_file_and_dataset(tiny_vla, tmp_path) -> None:
    directory = save_checkpoint(tiny_vla, tmp_path / "vla")
    stats = directory / "action_stats.json"
    table = json.loads(stats.read_text())
    table["toy"]["q99"] = table["toy"]["q99"][:1]
    stats.write_text(json.dumps(table))
    with pytest.raises(CheckpointError) as info:
        load(directory)
    assert str(info.value) == (f"{stats} is not a valid action-statistics table: {stats}: dataset 'toy': 'q99' has 1 "
                               "entries but 'q01' has 3")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_weights_that_would_run_code_are_refused(tmp_path) -> None:
    from transformers import LlamaConfig

    from vlx.llm.backbone import HFCausalLM

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, vocab_size=64).save_pretrained(tmp_path)
    marker = tmp_path / "code-ran"
    with open(tmp_path / "pytorch_model.bin", "wb") as file:
        pickle.dump({"model.embed_tokens.weight": _Payload(marker)}, file)
    with pytest.raises(CheckpointError) as info:
        HFCausalLM(source=str(tmp_path), load_tokenizer=False)
    assert str(info.value) == (
        f"refused to load language model from {tmp_path} (config key 'llm.source'): its weights are a pickle that "
        "torch.load(weights_only=True) will not unpickle, as it would run code; use safetensors weights")
    assert not marker.exists()


UNSAFE = [
    (r"torch\.load\((?![^)]*weights_only=True)", "torch.load without weights_only=True"),
    (r"trust_remote_code\s*=\s*True", "trust_remote_code=True"),
    (r"pickle\.loads?\(|dill\.|cloudpickle", "unpickling"),
    (r"\binstantiate\(|hydra\.utils", "Hydra instantiate"),
    (r"allow_pickle\s*=\s*True", "numpy allow_pickle"),
]


def test_vlx_sources_load_nothing_unsafely() -> None:
    sources = sorted((ROOT / "vlx").rglob("*.py"))
    assert len(sources) > 40
    found = [f"{path.relative_to(ROOT)}: {what}" for path in sources for pattern, what in UNSAFE
             if re.search(pattern, path.read_text(encoding="utf-8"))]
    assert found == []
    assert "SAFE_LOADING" in (ROOT / "vlx/llm/backbone.py").read_text() and "SAFE_LOADING" in (
        ROOT / "vlx/vision/hf_clip.py").read_text()


def test_docs_errors_lists_at_least_20_cases_each_with_an_existing_test_and_a_raised_kind() -> None:
    text = (ROOT / "docs/errors.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if re.match(r"\|\s*`[a-z-]+`", line)]
    assert len(rows) >= 20
    for row in rows:
        tests = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row)
        assert tests, f"no test named in: {row}"
        for file, name in tests:
            assert re.search(rf"^def {name}\(", (ROOT / file).read_text(encoding="utf-8"), re.M), f"{file}::{name}"
    sources = "".join(path.read_text(encoding="utf-8") for path in (ROOT / "vlx").rglob("*.py"))
    kinds = {kind for row in rows for kind in re.findall(r"`([a-z-]+)`", row.split("|")[1])} - {"handled", "other"}
    assert len(kinds) >= 30
    assert sorted(kind for kind in kinds if f'"{kind}"' not in sources) == []  # each kind is raised somewhere
