"""The Hydra applications behind `vlx train`, `vlx eval` and `vlx info`.

Each runs `hydra.main` on vlx's config directory with the recipes registered, so all of Hydra's
command line works: overrides, `-m` multiruns, `--cfg job` to print the composed config. VlxErrors
raised inside are re-raised past Hydra's own error reporting so the CLI prints them as one line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from vlx.config import composition_error, recipe_names, register_recipes
from vlx.config_schema import check_config
from vlx.errors import ConfigError, VlxError
from vlx.paths import conf_dir
from vlx.vision_preset_table import preset_configs


class _Escaped(BaseException):
    """Carries a VlxError through Hydra (which reports ordinary exceptions with a stack trace)."""

    def __init__(self, error: VlxError) -> None:
        self.error = error


NO_OUTPUT_DIR = ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled",
                 "hydra/hydra_logging=disabled"]


SUMMARIES = {
    "vlx train": "train the stages of a recipe (`-m` sweeps over comma-separated values)",
    "vlx eval": "evaluate a checkpoint: VLM exact-match accuracy + blank-image control; VLA closed-loop success",
    "vlx info": "build the model on the meta device and print its parameter counts",
}


def config_groups() -> dict[str, list[str]]:
    """Config group → its options, read from the config directory and the vision preset table (what Hydra's help
    lists, without composing)."""
    groups = {path.name: sorted(p.stem for p in path.glob("*.yaml")) for path in sorted(conf_dir().iterdir())
              if path.is_dir()}
    groups["vision"] = sorted({*groups.get("vision", []), *preset_configs()})
    return {"recipe": recipe_names(), **{name: options for name, options in groups.items() if options}}


def quick_help(prog: str) -> str:
    """`vlx train|eval|info --help`: usage and the config groups, in well under a second.

    Hydra's own `--help` composes every group option (about 8 s here with the recipes registered); it is
    still there as `--hydra-help`.
    """
    target = "checkpoint=DIR" if prog == "vlx eval" else "recipe=NAME"
    lines = [f"usage: {prog} {target} [key=value ...] [-m] [--cfg job]", "", f"{prog}: {SUMMARIES[prog]}.", "",
             "config groups (group=option):"]
    lines += [f"  {group}: {', '.join(options)}" for group, options in config_groups().items()]
    lines += ["", "Any key of the composed config can be overridden (stages.finetune.lr=1e-4); print it with "
              f"`{prog} {target} --cfg job`.", "Hydra's own flags: --hydra-help. Docs: README.md."]
    return "\n".join(lines)


def run_hydra(task: Callable[[DictConfig], Any], argv: list[str], prog: str, extra: list[str] = ()) -> None:
    """Run `task` as a Hydra app over `argv` (Hydra reads sys.argv, so it is swapped in).

    `extra` overrides go after the user's arguments (argparse needs flags like `-m` before positionals
    to stay together with theirs). `--help` / `-h` print `quick_help` instead of starting Hydra.
    """
    if "--help" in argv or "-h" in argv:
        print(quick_help(prog))
        return
    register_recipes()

    def guarded(cfg: DictConfig) -> Any:
        try:
            check_config(cfg)
            return task(cfg)
        except VlxError as exc:
            raise _Escaped(exc) from None

    saved, saved_full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [prog, *argv, f"hydra.job.name={prog.split()[-1]}", *extra]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors reach vlx, which prints them as one line
    try:
        hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(guarded)()
    except _Escaped as escaped:
        raise escaped.error from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise composition_error(exc, argv) from None
    finally:
        sys.argv = saved
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error


def label_sweep_job(cfg: DictConfig, hydra_cfg: Any) -> None:
    """Point outputs at the job's own directory; in a multirun, name the W&B group after the sweep.

    Every job of `vlx train -m ...` becomes one W&B run in the group named after the sweep directory
    (one name for the whole sweep), its run named `{sweep}-{job number}`, tagged with its overrides.
    """
    cfg.output_dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    sweep = Path(hydra_cfg.runtime.output_dir).parent.name
    cfg.run_name = f"{sweep}-{hydra_cfg.job.num}"
    if "group" in cfg.logger:
        cfg.logger.group = cfg.logger.group or sweep
        cfg.logger.tags = [*cfg.logger.tags, *(o[:64] for o in hydra_cfg.overrides.task)]  # W&B: ≤ 64 chars


def sweep_objective(checkpoint: Path, objective: str, sweeper_target: str) -> float | None:
    """The metric `train.objective` of the last stage, returned to Hydra's sweeper.

    Optuna needs a number from every job, so under the Optuna sweeper a metric the stage did not log is a
    ConfigError naming the ones it did; other sweepers ignore the return value.
    """
    from vlx.checkpoint import read_metadata

    metrics = read_metadata(checkpoint).get("metrics", {})
    if objective in metrics:
        return metrics[objective]
    if "optuna" in sweeper_target.lower():
        raise ConfigError(f"train.objective={objective!r} was not logged by the last stage ({checkpoint.name}); "
                          f"it logged {', '.join(sorted(metrics)) or 'nothing'} (give the stage val data for val/...)")
    return None


def sets_run_name(override: str) -> bool:
    """Whether a command-line override sets `run_name` (`run_name=X`, `+run_name=X`, `~run_name`)."""
    return override.split("=", 1)[0].lstrip("+~") == "run_name"


def relaunch_argv(overrides: list[str], run_name: str) -> list[str]:
    """The `sys.argv` Lightning's DDP launcher re-runs in each extra local process: this `vlx train` job.

    Lightning re-executes `sys.argv` (as `python -m vlx ...` or `python .../vlx/__main__.py ...`, adding the
    Hydra run directory). Hydra has consumed the real argv by then, so vlx puts back the command, the job's
    own overrides (one job of a multirun, without `-m`) and the run name resolved here, so that every rank
    trains the same config under the same name.
    """
    main = Path(__file__).resolve().parent.parent / "__main__.py"
    kept = [o for o in overrides if not sets_run_name(o)]
    return [str(main), "train", *kept, f"run_name={run_name}"]


def check_run_name_agreed(overrides: list[str], environ: dict[str, str], where: str = "run_name") -> None:
    """Several processes started by torchrun or srun must be told the run name: the default is a timestamp."""
    processes = int(environ.get("WORLD_SIZE") or environ.get("SLURM_NTASKS") or 1)
    if processes > 1 and not any(sets_run_name(o) for o in overrides):
        raise ConfigError(f"{processes} processes train this run (WORLD_SIZE/SLURM_NTASKS): give {where}=NAME on the "
                          "command line, since the default is a timestamp each process would take at another moment")


def _train(cfg: DictConfig) -> float | None:
    from lightning.pytorch.utilities import rank_zero_only

    from vlx.cli.report import print_training_outputs
    from vlx.training.run import run_training

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:  # multirun jobs are named after the sweep, the same in every process
        check_run_name_agreed(list(hydra_cfg.overrides.task), dict(os.environ))
    label_sweep_job(cfg, hydra_cfg)
    saved, sys.argv = sys.argv, relaunch_argv(list(hydra_cfg.overrides.task), str(cfg.run_name))
    try:
        checkpoints = run_training(cfg)
    finally:
        sys.argv = saved
    if rank_zero_only.rank == 0:
        print_training_outputs(checkpoints, cfg.output_dir)
    last = list(checkpoints.values())[-1]
    return sweep_objective(last, cfg.train.objective, str(hydra_cfg.sweeper.get("_target_", "")))


def _evaluate(cfg: DictConfig) -> None:
    from vlx.cli.report import evaluate_checkpoint

    evaluate_checkpoint(cfg)


def _info(cfg: DictConfig) -> None:
    from vlx.cli.report import print_info

    print_info(cfg)


def train(argv: list[str]) -> None:
    run_hydra(_train, argv, "vlx train")


def evaluate(argv: list[str]) -> None:
    run_hydra(_evaluate, argv, "vlx eval")


def info(argv: list[str]) -> None:
    run_hydra(_info, argv, "vlx info", extra=NO_OUTPUT_DIR)  # prints only; leaves no run directory
