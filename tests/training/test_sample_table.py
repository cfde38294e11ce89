"""The W&B sample table on robot data: a VLA stage validated on a robomimic split logs image, instruction, the
demonstrated and the predicted action (`RobotSampleTable`), and an unsupported validation source is refused."""

from __future__ import annotations

import json

import h5py
import lightning as L
import numpy as np
import pytest
from lightning.pytorch.loggers import WandbLogger

from vlx.envs import record_demos
from vlx.errors import ConfigError
from vlx.training.callbacks import RobotSampleTable, SampleTable, sample_table_for
from vlx.training.datamodule import VlxDataModule
from vlx.training.module import VlxModule


def vla_stage(path: str, count: int) -> dict:
    source = {"key": "block-reach", "path": path}
    return {"trainable": ["projector", "llm"], "lora": None, "epochs": 1, "max_steps": 2, "global_batch_size": 4,
            "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8,
            "schedule": "constant", "warmup_ratio": 0.0, "max_grad_norm": 1.0, "on_nonfinite": "stop",
            "num_workers": 0, "val_every_n_epochs": 1, "sample_table": count,
            "data": {"train": {"name": "robomimic-hdf5", "datasets": [{**source, "filter_key": "train"}]},
                     "val": {"name": "robomimic-hdf5", "datasets": [{**source, "filter_key": "valid"}], "limit": 8}}}


def test_robot_validation_logs_instruction_target_and_predicted_action(tiny_vla, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    demos = record_demos(tmp_path / "demos.hdf5", num_demos=6, seed=2, valid_fraction=0.34).path
    stage = vla_stage(str(demos), count=3)
    table = sample_table_for(stage["data"]["val"], 3, "stages.vla")
    assert isinstance(table, RobotSampleTable) and (table.filter_key, table.unnorm_key) == ("valid", "block-reach")
    logger = WandbLogger(project="vlx-test", save_dir=str(tmp_path), offline=True)
    trainer = L.Trainer(max_epochs=1, logger=logger, callbacks=[table], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(VlxModule(tiny_vla, stage, "stages.vla"), datamodule=VlxDataModule(tiny_vla, stage, "stages.vla", 0))
    logger.experiment.finish()

    tables = sorted(tmp_path.glob("wandb/offline-run-*/files/media/table/val/samples_*.table.json"))
    assert tables, sorted(str(p) for p in tmp_path.rglob("*.json"))
    logged = json.loads(tables[-1].read_text())
    assert logged["columns"] == ["image", "instruction", "target", "prediction"] and len(logged["data"]) == 3
    with h5py.File(demos) as f:  # the first valid demo's first step: the first row's instruction and action
        first = sorted(name.decode() for name in f["mask/valid"][()])[0]
        instruction = json.loads(f[f"data/{first}"].attrs["ep_meta"])["lang"]
        action = f[f"data/{first}/actions"][0]
    assert logged["data"][0][1] == instruction
    assert logged["data"][0][2] == "[" + ", ".join(f"{x:.3f}" for x in action) + "]"
    predicted = np.array(json.loads(logged["data"][0][3]))  # the model's action, un-normalised: finite, 3-D
    assert predicted.shape == (3,) and np.isfinite(predicted).all()
    assert float(trainer.callback_metrics["val/sample_action_l1"]) >= 0.0 and "val/sample_action_l1" in {
        key for key in trainer.callback_metrics}


def test_sample_table_fits_the_validation_source(shapes) -> None:
    questions = {"name": "llava-json", "json_path": str(shapes.questions("val")), "image_dir": str(shapes.image_dir)}
    assert isinstance(sample_table_for(questions, 2, "stages.finetune"), SampleTable)
    assert sample_table_for(questions, 0, "stages.finetune") is None and sample_table_for(None, 4, "s") is None
    with pytest.raises(ConfigError, match=r"'stages.x.sample_table'=4: .* not 'webdataset'; set stages.x.sample"):
        sample_table_for({"name": "webdataset"}, 4, "stages.x")
