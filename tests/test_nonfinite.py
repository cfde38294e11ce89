"""A non-finite loss is caught at the batch it happens: training stops naming the step and sample ids (one
line, exit 2, from `vlx train`), or with `on_nonfinite: skip` the batch is skipped, warned about and counted.

The NaN is real: the `<unk>` row of the LLM's input embedding is NaN in the starting checkpoint, and only
the sample "poison-1" (its answer is "日", a character the tiny tokenizer does not know) contains `<unk>`.
"""

from __future__ import annotations

import copy
import json

import lightning as L
import pytest
import torch

from tests.subprocess_helpers import run_vlx
from vlx.checkpoint import save_checkpoint
from vlx.training.datamodule import VlxDataModule
from vlx.training.epoch_sampler import EpochSampler
from vlx.training.module import VlxModule
from vlx.training.run import prepare_model

BATCH = 8


@pytest.fixture()
def poisoned(tiny_model, shapes, tmp_path):
    """(checkpoint directory with a NaN `<unk>` embedding, training JSON with one poisoned sample)."""
    samples = json.loads(shapes.questions("train").read_text())
    poison = copy.deepcopy(samples[0])
    poison["id"], poison["conversations"][1]["value"] = "poison-1", "日"
    samples.append(poison)
    data = tmp_path / "poisoned.json"
    data.write_text(json.dumps(samples))
    unk = tiny_model.tokenizer.unk_token_id
    assert tiny_model.tokenizer("日", add_special_tokens=False).input_ids[-1] == unk
    with torch.no_grad():
        tiny_model.llm.model.get_input_embeddings().weight[unk] = float("nan")
    return save_checkpoint(tiny_model, tmp_path / "poisoned-init"), data, [s["id"] for s in samples]


def poison_batch(ids: list[str], seed: int) -> tuple[int, list[str]]:
    """The epoch-0 batch index holding poison-1, and that batch's sample ids (the sampler's own order)."""
    order = EpochSampler(len(ids), seed).order(0).tolist()
    batch = order.index(ids.index("poison-1")) // BATCH
    return batch, [ids[i] for i in order[batch * BATCH:(batch + 1) * BATCH]]


def test_nan_loss_stops_vlx_train_with_one_line_naming_step_and_samples(poisoned, tiny_cfg, vlx_home, shapes, tmp_path):
    init, data, ids = poisoned
    result = run_vlx(
        "train", "recipe=llava-tiny", f"paths.home={vlx_home}", "logger=none", "train.stages=[finetune]",
        f"stages.finetune.init_from={init}", f"stages.finetune.data.train.json_path={data}",
        f"stages.finetune.data.train.image_dir={shapes.image_dir}", "stages.finetune.data.val=null",
        f"stages.finetune.batch_size={BATCH}", f"stages.finetune.global_batch_size={BATCH}", "stages.finetune.epochs=1",
        f"output_dir={tmp_path / 'run'}", cwd=tmp_path,
    )
    batch, batch_ids = poison_batch(ids, seed=0)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("vlx train: error:")]
    assert errors == [f"vlx train: error: stages.finetune: loss is nan at step {batch} (epoch 0, batch {batch}); "
                      f"samples: {', '.join(batch_ids)}; stages.finetune.on_nonfinite=skip skips such batches"]
    assert not (tmp_path / "run" / "checkpoints" / "finetune").exists()


def test_skip_mode_skips_the_poisoned_batch_warns_and_counts(poisoned, tiny_cfg, shapes, tmp_path):
    init, data, ids = poisoned
    stage = copy.deepcopy(tiny_cfg["stages"]["finetune"])
    stage.update(init_from=str(init), batch_size=BATCH, global_batch_size=BATCH, on_nonfinite="skip", num_workers=0)
    stage["data"] = {"train": {"name": "llava-json", "json_path": str(data), "image_dir": str(shapes.image_dir)},
                     "val": None}
    model = prepare_model(tiny_cfg, stage, "stages.finetune", None)
    module = VlxModule(model, stage, "stages.finetune")
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    batch, batch_ids = poison_batch(ids, seed=0)
    with pytest.warns(UserWarning) as caught:
        trainer.fit(module, datamodule=VlxDataModule(model, stage, "stages.finetune", seed=0))
    skipped = [str(w.message) for w in caught if "on_nonfinite=skip" in str(w.message)]
    assert skipped == [f"stages.finetune: loss is nan at step {batch} (epoch 0, batch {batch}); samples: "
                       f"{', '.join(batch_ids)}; skipped (stages.finetune.on_nonfinite=skip, 1 so far)"]
    assert module.nonfinite_skipped == 1 and trainer.callback_metrics["train/nonfinite_skipped"].item() == 1.0
    assert trainer.global_step == -(-len(ids) // BATCH)  # every batch was an optimiser step, the poisoned one empty
    unk = model.tokenizer.unk_token_id
    for name, param in model.named_parameters():
        if param.requires_grad:
            finite = param.detach().clone()
            if name.endswith("embed_tokens.weight"):
                finite[unk] = 0.0  # the poisoned row itself stays NaN; it never reached any other weight
            assert torch.isfinite(finite).all(), name
    changed = [name for name, param in model.named_parameters()
               if param.requires_grad and not torch.equal(param, before[name])]
    assert any(name.startswith("projector.") for name in changed) and any(name.startswith("llm.") for name in changed)


def test_unknown_on_nonfinite_value_names_the_config_key(tiny_model):
    from vlx.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^stages.finetune.on_nonfinite='ignore'; expected 'stop' or 'skip'$"):
        VlxModule(tiny_model, {"on_nonfinite": "ignore"}, "stages.finetune")
