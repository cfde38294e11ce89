"""Typed config nodes: a misspelled key in a stage, `train`, `eval`, `rollout`, `checkpointing`, `compile`,
`augment` or `observation` is a one-line error naming the key and the closest valid one, whether it comes from
the command line (with or without `+`) or from a recipe file; a value of the wrong type names the type."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.subprocess_helpers import run_vlx
from vlx.config import compose
from vlx.config_schema import check_config
from vlx.errors import ConfigError

TYPOS = [  # override → (the key named, the closest valid key)
    ("stages.finetune.lrr=1e-3", "stages.finetune.lrr", "lr"),
    ("+stages.finetune.lrr=1e-3", "stages.finetune.lrr", "lr"),
    ("stages.finetune.epoch=2", "stages.finetune.epoch", "epochs"),
    ("+stages.align.warmup=0.1", "stages.align.warmup", "warmup_ratio"),
    ("+train.stage=[finetune]", "train.stage", "stages"),
    ("+eval.limt=5", "eval.limt", "limit"),
    ("+rollout.episode=3", "rollout.episode", "episodes"),
    ("+checkpointing.keeep=3", "checkpointing.keeep", "keep"),
    ("+compile.backnd=eager", "compile.backnd", "backend"),
    ("+augment.colour_jitter=true", "augment.colour_jitter", "color_jitter"),
    ("+observation.camera=[a]", "observation.camera", "cameras"),
    ("evall.limit=3", "evall", "eval"),
]


@pytest.mark.parametrize(("override", "key", "suggestion"), TYPOS, ids=[t[0] for t in TYPOS])
def test_misspelled_key_is_one_line_naming_the_closest_valid_key(override: str, key: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose(["recipe=llava-tiny", override])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"config key '{key}' is not a ") and f"did you mean '{suggestion}'?" in message


def test_the_cli_prints_the_same_line_and_exits_2(tmp_path) -> None:
    for override in ("+stages.finetune.lrr=1e-3", "stages.finetune.lrr=1e-3"):
        result = run_vlx("info", "recipe=llava-tiny", override, cwd=tmp_path, timeout=120)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith("vlx info: error: config key 'stages.finetune.lrr' is not a stage setting; "
                                        "did you mean 'lr'?") and result.stderr.count("\n") == 1


def test_a_recipe_file_with_a_typo_is_refused() -> None:
    """What a recipe's `stages:` block composes to, with a misspelled key: the same check applies."""
    recipe = OmegaConf.create({"stages": {"vla": {"epochs": 3, "batch_sise": 16}}})
    with pytest.raises(ConfigError, match=r"config key 'stages.vla.batch_sise' is not a stage setting; did you mean "
                                          r"'batch_size'\?"):
        check_config(recipe)


@pytest.mark.parametrize(("override", "message"), [
    ("stages.finetune.epochs=two", "config key 'stages.finetune.epochs'='two': expected int"),
    ("stages.finetune.lr=fast", "config key 'stages.finetune.lr'='fast': expected float"),
    ("rollout.episodes=true", "config key 'rollout.episodes'=True: expected int"),
])
def test_wrong_types_name_the_key_and_the_type(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose(["recipe=llava-tiny", override])
    assert str(info.value).startswith(message)


def test_nested_lora_keys_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"'stages.vla.lora.alpah' is not a stages.vla.lora setting; did you mean "
                                          r"'alpha'\? \(valid: alpha, dropout, r, target_modules\)"):
        compose(["recipe=openvla-7b", "stage@stages.vla=lora", "+stages.vla.lora.alpah=4"])
    assert compose(["recipe=openvla-7b", "stage@stages.vla=lora", "stages.vla.lora.r=8"]).stages.vla.lora.r == 8
