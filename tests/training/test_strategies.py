"""Distributed strategies from `trainer.strategy`: FSDP's wrap and checkpointing policies come from the model."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from timm.models.vision_transformer import Block
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from vlx.builder import build_model, to_plain
from vlx.config import compose
from vlx.errors import ConfigError
from vlx.training.stages import apply_stage
from vlx.training.strategies import build_strategy, cast_frozen, fsdp_wrap_classes, is_sharded


@pytest.fixture(scope="module")
def openvla_7b_on_meta():
    cfg = to_plain(compose(["recipe=openvla-7b", "logger=none", "robot_data=/data/x.hdf5"]))
    with torch.device("meta"):
        return build_model({**cfg, "prompt": cfg["stages"]["vla"]["prompt"]}, load_weights=False, load_tokenizer=False)


def test_fsdp_wraps_decoder_layers_vision_blocks_towers_and_projector(openvla_7b_on_meta):
    model = openvla_7b_on_meta
    strategy = build_strategy({"name": "fsdp", "sharding_strategy": "SHARD_GRAD_OP"}, model)
    assert isinstance(strategy, FSDPStrategy)
    classes = fsdp_wrap_classes(model)
    towers = {type(member) for member in model.vision.members}
    assert {LlamaDecoderLayer, Block, type(model.projector)} | towers <= classes
    policy = strategy.kwargs["auto_wrap_policy"]
    wrapped = [m for m in model.modules() if type(m) in policy._module_classes]
    assert sum(isinstance(m, LlamaDecoderLayer) for m in wrapped) == 32
    assert sum(isinstance(m, Block) for m in wrapped) == 24 + 27  # DINOv2-L and SigLIP-SO400M blocks
    assert str(strategy.sharding_strategy) == "ShardingStrategy.SHARD_GRAD_OP"
    assert strategy.kwargs["use_orig_params"] is True


def test_fsdp_checkpoints_decoder_layers_only_when_asked(tiny_model):
    on = build_strategy({"name": "fsdp"}, tiny_model)
    off = build_strategy({"name": "fsdp", "activation_checkpointing": False}, tiny_model)
    assert on._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert off._activation_checkpointing_kwargs == {}
    assert CLIPEncoderLayer in fsdp_wrap_classes(tiny_model)  # transformers towers name their layers too


def test_frozen_parts_are_stored_in_bf16_and_trained_parts_stay_fp32(tiny_model):
    apply_stage(tiny_model, ["projector"], "stages.align.trainable")
    cast = cast_frozen(tiny_model, torch.bfloat16)
    assert cast == ["vision", "llm"]
    assert {p.dtype for p in tiny_model.vision.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in tiny_model.llm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in tiny_model.projector.parameters()} == {torch.float32}


def test_strings_pass_through_and_names_are_checked(tiny_model):
    assert build_strategy(None, tiny_model) == "auto" and build_strategy("ddp_spawn", tiny_model) == "ddp_spawn"
    assert isinstance(build_strategy({"name": "ddp", "find_unused_parameters": True}, tiny_model), DDPStrategy)
    with pytest.raises(ConfigError, match=r"trainer.strategy.name='fsdpp'; expected ddp, fsdp or deepspeed"):
        build_strategy({"name": "fsdpp"}, tiny_model)
    with pytest.raises(ConfigError, match=r"trainer.strategy.sharding_strategy='FULL'; expected one of FULL_SHARD"):
        build_strategy({"name": "fsdp", "sharding_strategy": "FULL"}, tiny_model)
    with pytest.raises(ConfigError, match=r"trainer.strategy.frozen_dtype='bf16'; expected one of float32"):
        build_strategy({"name": "fsdp", "frozen_dtype": "bf16"}, tiny_model)
    with pytest.raises(ConfigError, match=r"trainer.strategy.name=fsdp needs GPUs .* on a CPU use trainer=ddp"):
        build_strategy({"name": "fsdp"}, tiny_model, accelerator="cpu")
    assert is_sharded({"name": "fsdp"}) and is_sharded("deepspeed_stage_3") and not is_sharded({"name": "ddp"})
    assert not is_sharded(None) and not is_sharded("auto")


def test_configurations_that_would_lose_weights_are_refused(tiny_model):
    with pytest.raises(ConfigError, match=r"trainer.strategy.name=fsdp on one device has nothing to shard .*"
                                          r"use trainer=gpu") as refused:
        build_strategy({"name": "fsdp"}, tiny_model, accelerator="gpu", world_size=1)
    assert refused.value.kind == "strategy"
    with pytest.raises(ConfigError, match=r"sharding_strategy=NO_SHARD replicates every weight, which is DDP"):
        build_strategy({"name": "fsdp", "sharding_strategy": "NO_SHARD"}, tiny_model, world_size=8)
    with pytest.raises(ConfigError, match=r"trainer.strategy.stage=3 shards the parameters.*use trainer=fsdp"):
        build_strategy({"name": "deepspeed", "stage": 3}, tiny_model, world_size=8)
    with pytest.raises(ConfigError, match=r"trainer.strategy='deepspeed_stage_3': give sharded strategies as vlx's"):
        build_strategy("deepspeed_stage_3", tiny_model)
    apply_stage(tiny_model, ["projector"], "stages.align.trainable")
    with pytest.raises(ConfigError, match=r"NO_SHARD"):
        build_strategy({"name": "fsdp", "sharding_strategy": "NO_SHARD", "frozen_dtype": "bfloat16"}, tiny_model,
                       world_size=8)
    with pytest.raises(ConfigError, match=r"on one device"):
        build_strategy({"name": "fsdp", "frozen_dtype": "bfloat16"}, tiny_model, world_size=1)
    assert {p.dtype for p in tiny_model.parameters()} == {torch.float32}  # refused before frozen parts are cast
    assert isinstance(build_strategy({"name": "fsdp", "frozen_dtype": None}, tiny_model, world_size=2), FSDPStrategy)


def test_lora_under_a_sharded_strategy_is_refused_before_training(tiny_cfg, tmp_path):
    from vlx.training.run import run_training

    cfg = to_plain(compose(["recipe=llava-tiny", "logger=none", "trainer=fsdp", "train.stages=[finetune]",
                            "+stages.finetune.lora={r: 4}", f"output_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match=r"stages.finetune.lora under a sharded trainer.strategy .*use trainer=ddp"):
        run_training(cfg)


def test_deepspeed_without_the_extra_is_a_config_error(tiny_model):
    pytest.importorskip("lightning")
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError,
                           match=r"trainer.strategy.name=deepspeed needs DeepSpeed: pip install 'vlx\[deepspeed\]'"):
            build_strategy({"name": "deepspeed", "stage": 2}, tiny_model)
    else:
        pytest.skip("DeepSpeed is installed here")


@pytest.mark.parametrize("trainer", ["ddp", "fsdp", "deepspeed"])
def test_trainer_configs_compose(trainer):
    cfg = to_plain(compose(["recipe=openvla-7b", f"trainer={trainer}", "logger=none", "robot_data=/data/x.hdf5"]))
    assert cfg["trainer"]["strategy"]["name"] == trainer and cfg["trainer"]["devices"] == -1
    assert cfg["trainer"]["precision"] == "bf16-mixed"


def test_several_processes_must_be_given_the_run_name():
    from vlx.cli.hydra_apps import check_run_name_agreed, relaunch_argv

    check_run_name_agreed(["recipe=llava-tiny"], {})  # one process: the timestamp default is fine
    check_run_name_agreed(["run_name=x"], {"WORLD_SIZE": "8"})
    with pytest.raises(ConfigError, match=r"8 processes train this run .*give run_name=NAME"):
        check_run_name_agreed(["recipe=llava-tiny"], {"WORLD_SIZE": "8"})
    with pytest.raises(ConfigError, match=r"2 processes"):
        check_run_name_agreed([], {"SLURM_NTASKS": "2"})
    argv = relaunch_argv(["recipe=llava-tiny", "run_name=old", "projector=mlp"], "multirun-x-1")
    assert argv[0].endswith("vlx/__main__.py") and argv[1:] == ["train", "recipe=llava-tiny", "projector=mlp",
                                                                "run_name=multirun-x-1"]


def test_slurm_launcher_example_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the vlx[slurm] extra (in vlx[dev])")
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "vlx", "train", "--cfg", "hydra", "recipe=llava-tiny", "trainer=ddp",
         "trainer.num_nodes=2", "hydra/launcher=slurm-8gpu", "hydra.launcher.nodes=2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    launcher = result.stdout.split("\n  launcher:\n", 1)[1]
    for line in ("nodes: 2", "tasks_per_node: 8", "gpus_per_node: 8", "signal_delay_s: 120",
                 "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"):
        assert f"    {line}\n" in launcher


def test_gathered_weights_keep_one_name_per_tied_tensor_and_must_be_complete():
    from torch import nn

    from vlx.errors import CheckpointError
    from vlx.training.run import complete_weights
    from vlx.training.strategies import tied_aliases

    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight  # an LM head tied to the embeddings
    names, aliases = set(model.state_dict()), tied_aliases(model)
    assert aliases == {"1.weight"} and names == {"0.weight", "1.weight"}
    gathered = {name: tensor.clone() for name, tensor in model.state_dict().items()}  # FSDP copies each name
    assert complete_weights(gathered, names, aliases, "stages.x").keys() == {"0.weight"}
    with pytest.raises(CheckpointError,
                       match=r"stages.x: the weights gathered from the sharded model lack \['0.weight'\]"):
        complete_weights({"1.weight": gathered["1.weight"]}, names, aliases, "stages.x")
