"""`robomimic-hdf5` samples: prompt + action tokens + EOS with labels on exactly those, training
statistics stored in the model and reused by the validation set, mixture weights, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vlx.builder import build_model
from vlx.data.collate import Collator
from vlx.envs import record_demos
from vlx.errors import ConfigError
from vlx.heads.instruction import vla_question
from vlx.llm.prompts import IGNORE_INDEX
from vlx.training.datamodule import VlxDataModule, build_dataset
from vlx.training.epoch_sampler import EpochSampler


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_demos(tmp_path_factory.mktemp("robot") / "demos.hdf5", num_demos=20, seed=3).path


@pytest.fixture()
def vla(tiny_cfg: dict):
    cfg = {**tiny_cfg, "head": {"name": "action-tokens", "action_dim": 3, "tokens": "new"},
           "prompt": {"name": "pure", "image_placement": "after-bos"},
           "augment": {"crop_scale": 0.9, "color_jitter": True}}
    return build_model(cfg)


def source(path: Path, split: str, **extra) -> dict:
    return {"name": "robomimic-hdf5", "datasets": [{"key": "reach", "path": str(path), "filter_key": split, **extra}]}


def test_samples_supervise_exactly_the_action_tokens_and_eos(vla, demos: Path) -> None:
    data = build_dataset(source(demos, "train"), "data.train", vla, training=True)
    item = data[0]
    codec, eos = vla.head.codec, vla.tokenizer.eos_token_id
    labels, ids = item["labels"], item["input_ids"]
    supervised = labels != IGNORE_INDEX
    assert supervised.sum() == 4 and supervised[-4:].all()  # 3 action tokens + EOS, at the end
    assert ids[-1] == eos and codec.is_action(ids[-4:-1]).all()
    assert torch.equal(labels[supervised], ids[supervised])
    stats = vla.action_stats["reach"]
    file = data.files[0]
    np.testing.assert_array_equal(ids[-4:-1].numpy(), codec.encode(stats.normalize(file.action(0))))
    np.testing.assert_allclose(item["actions"].numpy(), stats.normalize(file.action(0))[None], rtol=1e-6)
    assert item["action_mask"].tolist() == [True] and "state" not in item and "action_slots" not in item
    prompt = vla.tokenizer.decode(ids[ids != vla.llm.image_token_id][:-4])
    assert vla_question(file.instruction(0)) in prompt and prompt.startswith("<s>")
    assert (ids == vla.llm.image_token_id).sum() == vla.vision.num_patches
    assert item["pixel_values"].shape == (3, 48, 48)
    assert item["id"] == f"reach:{file.locate(0)[0]}:0"


def test_validation_uses_the_training_statistics(vla, demos: Path) -> None:
    with pytest.raises(ConfigError, match="no action statistics for 'reach'"):
        build_dataset(source(demos, "valid"), "data.val", vla, training=False)
    train = build_dataset(source(demos, "train"), "data.train", vla, training=True)
    stats = vla.action_stats["reach"]
    assert stats.num_trajectories == train.files[0].num_demos == 18
    np.testing.assert_allclose(stats.q99, np.quantile(train.files[0].actions(), 0.99, axis=0), rtol=1e-5)
    val = build_dataset(source(demos, "valid"), "data.val", vla, training=False)
    assert val.stats[0] is stats and val.augment is None and train.augment is not None


def test_collated_batch_carries_actions(vla, demos: Path) -> None:
    data = build_dataset(source(demos, "train"), "data.train", vla, training=True)
    batch = Collator(vla.tokenizer.pad_token_id)([data[i] for i in range(5)])
    assert batch["actions"].shape == (5, 1, 3) and batch["pixel_values"].shape == (5, 3, 48, 48)
    out = vla(batch)
    assert torch.isfinite(out.loss) and set(out.metrics) >= {"action_accuracy", "action_l1"}


def test_mixture_weights_give_each_source_its_share(vla, demos: Path) -> None:
    cfg = {"name": "robomimic-hdf5", "datasets": [
        {"key": "a", "path": str(demos), "filter_key": "train", "weight": 3.0},
        {"key": "b", "path": str(demos), "filter_key": "valid", "weight": 1.0}]}
    data = build_dataset(cfg, "data.train", vla, training=True)
    weights = data.sample_weights()
    first = torch.tensor([j == 0 for j, _ in data.index])
    assert weights[first].sum() / weights.sum() == pytest.approx(0.75)
    stage = {"data": {"train": cfg}, "batch_size": 4, "num_workers": 0}
    loader = VlxDataModule(vla, stage, "stages.vla").train_dataloader()
    assert isinstance(loader.sampler, EpochSampler) and torch.equal(loader.sampler.weights, weights.double())


def test_errors_name_the_config_key_and_file(vla, demos: Path) -> None:
    vla.head.action_dim = 7
    with pytest.raises(ConfigError, match=r"have 3 dimensions, but head.action_dim=7 \(data.train.datasets\[0\]\)"):
        build_dataset(source(demos, "train"), "data.train", vla, training=True)
    with pytest.raises(ConfigError, match=r"data.train.datasets\[0\].camera\b.*Did you mean 'camera_key'"):
        build_dataset(source(demos, "train", camera="x"), "data.train", vla, training=True)
    with pytest.raises(ConfigError, match="its own 'key'"):
        build_dataset({"name": "robomimic-hdf5", "datasets": [{"key": "a", "path": str(demos)}] * 2},
                      "data.train", vla, training=True)
