"""Sweeps through `vlx train -m`: a Hydra multirun over projectors, and an Optuna search.

Each job of a sweep trains prismatic-tiny for a couple of steps in its own run directory; the tests check
that every job left its own checkpoint and offline W&B run, that all runs share one W&B group named after
the sweep and carry their swept values as tags, and that the Optuna sweeper gets each job's
`train.objective` (the last stage's val/loss) and reports the best of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.subprocess_helpers import run_vlx

PROJECTORS = ("linear", "mlp", "fused-mlp")


@pytest.fixture(scope="module")
def prismatic_args(vlx_home: Path, shapes) -> list[str]:
    """prismatic-tiny with its tiny assets written: one epoch of two steps on the small shapes set, then validation."""
    from vlx.builder import to_plain
    from vlx.config import compose
    from vlx.data.tiny_assets import write_tiny_assets

    cfg = to_plain(compose(["recipe=prismatic-tiny", f"paths.home={vlx_home}", "logger=none"]))
    write_tiny_assets(cfg["vision"], cfg["llm"], seed=0)
    return [f"paths.home={vlx_home}", f"shapes.root={shapes.root}", "+stages.finetune.data.train.limit=16",
            "stages.finetune.epochs=1",
            "stages.finetune.batch_size=8", "stages.finetune.global_batch_size=8", "stages.finetune.data.val.limit=16"]


def job_checkpoint(cwd: Path, sweep: str, job: int) -> Path:
    return cwd / "runs" / f"multirun-{sweep}" / str(job) / "checkpoints" / "finetune"


def test_projector_sweep_gives_three_jobs_three_wandb_runs_in_one_group(tmp_path, prismatic_args):
    result = run_vlx("train", "-m", "recipe=prismatic-tiny", f"projector={','.join(PROJECTORS)}", *prismatic_args,
                     "logger=wandb", "run_name=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    widths = set()
    for job, projector in enumerate(PROJECTORS):
        checkpoint = job_checkpoint(tmp_path, "sweep", job)
        assert f"checkpoint[finetune]={checkpoint}" in result.stdout
        config = OmegaConf.load(checkpoint / "config.yaml")
        assert config.projector.name == projector
        assert config.logger.group == "multirun-sweep" and config.run_name == f"multirun-sweep-{job}"
        assert f"projector={projector}" in config.logger.tags
        assert "val/loss" in json.loads((checkpoint / "vlx.json").read_text())["metrics"]
        widths.add(json.loads((checkpoint / "vlx.json").read_text())["parameters"]["projector_total"])
        (offline_run,) = (checkpoint.parent.parent / "wandb").glob("offline-run-*")  # one stage: one W&B run
        (records,) = offline_run.glob("run-*.wandb")
        log = records.read_bytes()
        assert b"multirun-sweep" in log and f"multirun-sweep-{job}-finetune".encode() in log
    assert len(widths) == 3  # three different projectors were really built


def test_optuna_search_minimises_the_jobs_val_loss(tmp_path, prismatic_args):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the vlx[optuna] extra (in vlx[dev])")
    result = run_vlx("train", "-m", "recipe=prismatic-tiny", "hparams_search=prismatic-tiny-optuna",
                     "hydra.sweeper.n_trials=3", *prismatic_args, "logger=none", "run_name=search", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    losses, trials = [], []
    for job in range(3):
        checkpoint = job_checkpoint(tmp_path, "search", job)
        config = OmegaConf.load(checkpoint / "config.yaml")
        losses.append(json.loads((checkpoint / "vlx.json").read_text())["metrics"]["val/loss"])
        trials.append((config.projector.name, config.stages.finetune.lr))
    assert all(3e-4 <= lr <= 3e-3 and projector in PROJECTORS for projector, lr in trials)
    assert len(set(trials)) == 3  # the sampler proposed three different points
    results = OmegaConf.load(tmp_path / "runs" / "multirun-search" / "optimization_results.yaml")
    best = losses.index(min(losses))
    assert results.best_value == pytest.approx(losses[best])
    assert results.best_params.projector == trials[best][0]
    assert float(results.best_params["stages.finetune.lr"]) == pytest.approx(trials[best][1])


def test_optuna_objective_that_the_stage_did_not_log_is_a_config_error(tmp_path, prismatic_args):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the vlx[optuna] extra (in vlx[dev])")
    result = run_vlx("train", "-m", "recipe=prismatic-tiny", "hparams_search=prismatic-tiny-optuna",
                     "hydra.sweeper.n_trials=1", *prismatic_args, "train.objective=val/acc", "logger=none",
                     "run_name=bad", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "vlx train: error: train.objective='val/acc' was not logged by the last stage (finetune); it logged " \
           in result.stderr and "val/loss" in result.stderr
