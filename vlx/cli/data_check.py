"""`vlx data check PATH`: the command line of `vlx.data.check`.

A `.json` file is checked as LLaVA JSON: the tokenizer, prompt format, number of image tokens and
max_length come from a recipe's stage (Hydra overrides, default recipe llava-tiny and its last stage that
trains on LLaVA JSON), with the model built on the `meta` device (no weights read). An HDF5 file is
checked as robomimic demonstrations with the given camera, state and action keys (`--camera-key` and
`--state-key` repeat, in order; without them a `recipe=NAME` override takes the recipe's
`observation.cameras` / `observation.state_keys`). A directory with `meta/info.json` is checked as a LeRobot
dataset (v3.0 or v2.1): every camera feature unless `--camera-key` names some, `observation.state` unless
`--state-key` does, `--action-key` default `action`, every frame decoded. The summary goes to stdout; the exit
status is 1 when there are problems, 0 when there are none.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from vlx.config import compose, to_plain, with_recipe
from vlx.errors import ConfigError, DataError

if TYPE_CHECKING:
    from vlx.data.check import CheckReport


def add_parser(sub: Any) -> None:
    """The `check` subcommand's options, on the `vlx data` subparsers `sub`."""
    check = sub.add_parser("check", help="run every check over a LLaVA JSON file, a robomimic HDF5 file or a LeRobot "
                           "dataset directory; list all problems")
    check.add_argument("path", help="a LLaVA .json file, a robomimic .hdf5 file or a LeRobot dataset directory")
    check.add_argument("overrides", nargs="*", help="LLaVA JSON: Hydra overrides naming the model (default recipe: "
                       "llava-tiny), e.g. recipe=prismatic-tiny")
    check.add_argument("--image-dir",
                       help="LLaVA JSON: the directory image paths are relative to (default: the file's)")
    check.add_argument("--stage", help="LLaVA JSON: the recipe stage whose prompt format and max_length apply "
                       "(default: the last one that trains on llava-json)")
    check.add_argument("--max-length", type=int, help="LLaVA JSON: default: the stage's data.train.max_length")
    check.add_argument("--camera-key", action="append", help="HDF5: a camera obs key; repeat for several cameras, "
                       "in the model's order (default: the recipe's observation.cameras, else agentview_image)")
    check.add_argument("--state-key", action="append", help="HDF5: a low-dim obs key of the robot state; repeat, in "
                       "order (default: the recipe's observation.state_keys, else none)")
    check.add_argument("--action-key", help="HDF5: default: actions; LeRobot: default: action")
    check.add_argument("--instruction", help="HDF5: the instruction of demos without ep_meta 'lang'")
    check.add_argument("--filter-key", help="HDF5: a mask/ key that must exist (every mask/ key is checked)")
    check.add_argument("--first", type=int, default=3, help="messages shown per kind of problem (default: %(default)s)")


def _llava_stage(config: DictConfig, stage: str | None) -> str:
    """The named stage, or the last of `train.stages` whose training data is LLaVA JSON."""
    if stage is not None:
        if stage not in config.stages:
            raise ConfigError(f"--stage {stage!r} is not a stage of the recipe; its stages are {sorted(config.stages)}")
        return stage
    for name in reversed(list(config.train.stages)):
        if OmegaConf.select(config, f"stages.{name}.data.train.name") == "llava-json":
            return name
    raise ConfigError(f"no stage of train.stages={list(config.train.stages)} trains on llava-json; pass --stage NAME")


def check_json(args: argparse.Namespace) -> CheckReport:
    """Check a LLaVA JSON file with the tokenizer, prompt format and image tokens of the configured model."""
    import torch

    from vlx.builder import build_model
    from vlx.data.check import check_llava_json

    config = compose(with_recipe(args.overrides))
    stage = _llava_stage(config, args.stage)
    cfg = {key: to_plain(config[key]) for key in ("vision", "projector", "llm", "head")}
    cfg["prompt"] = to_plain(config.stages[stage].prompt)
    with torch.device("meta"):  # the tokenizer is read; no weights are
        model = build_model(cfg, load_weights=False)
    max_length = args.max_length or OmegaConf.select(config, f"stages.{stage}.data.train.max_length") or 2048
    on_unanswered = OmegaConf.select(config, f"stages.{stage}.data.train.on_unanswered") or "skip"
    print(f"stage={stage} prompt={cfg['prompt']['name']} max_length={max_length} on_unanswered={on_unanswered}")
    image_dir = args.image_dir or Path(args.path).expanduser().parent
    return check_llava_json(args.path, image_dir, model.prompt_format, model.tokenizer, model.vision.num_patches,
                            max_length, on_unanswered)


def observation_keys(args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """The camera and state keys to check: the flags', else the recipe's observation node (when one is named)."""
    cameras, state_keys = args.camera_key, args.state_key
    if (cameras is None or state_keys is None) and any(o.startswith("recipe=") for o in args.overrides):
        observation = to_plain(compose(args.overrides).get("observation")) or {}
        cameras = cameras or observation.get("cameras")
        state_keys = state_keys if state_keys is not None else observation.get("state_keys")
    print(f"cameras={','.join(cameras or ['agentview_image'])} state_keys={','.join(state_keys or []) or 'none'}")
    return list(cameras or ["agentview_image"]), state_keys


def run(args: argparse.Namespace) -> None:
    """Check the file, print the summary, exit 1 when there are problems."""
    import h5py  # here, not at import: `vlx data --help` stays fast

    from vlx.data.check import check_robomimic

    path = Path(args.path).expanduser()
    from vlx.data.lerobot import is_lerobot_dir

    if is_lerobot_dir(path):
        from vlx.data.check import check_lerobot

        report = check_lerobot(path, args.camera_key, args.state_key, args.action_key or "action")
        print("\n".join(report.summary(first=args.first)))
        if report.problems:
            raise SystemExit(1)
        return
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected a LLaVA .json file, a robomimic .hdf5 file or a LeRobot "
                        "dataset directory (with meta/info.json)", kind="missing-file")
    if path.suffix.lower() == ".json":
        report = check_json(args)
    elif path.suffix.lower() in (".hdf5", ".h5") or h5py.is_hdf5(path):
        cameras, state_keys = observation_keys(args)
        report = check_robomimic(path, cameras if len(cameras) > 1 else cameras[0], args.action_key or "actions",
                                 args.instruction, args.filter_key, state_keys=state_keys)
    else:
        raise DataError(f"{path}: cannot tell the dataset type; expected a LLaVA .json file or a robomimic .hdf5 file",
                        kind="unknown-format")
    print("\n".join(report.summary(first=args.first)))
    if report.problems:
        raise SystemExit(1)
