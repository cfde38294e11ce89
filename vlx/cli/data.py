"""`vlx data shapes|assets|block-reach|metaworld|block-reach-text|check|convert`: the built-in synthetic dataset, the
tiny local assets, scripted `block-reach` or Meta-World robot demonstrations written as one robomimic-layout HDF5
file, captions/questions about the frames of those demonstrations (LLaVA JSON), `check`, which lists every
problem of a LLaVA JSON file, a robomimic HDF5 file or a LeRobot dataset (`vlx.cli.data_check`), and `convert`
between robomimic HDF5 and LeRobot v3.0 (`vlx.data.lerobot_convert`; the direction follows the source).

Unset options default to what the tiny recipes train on (llava-tiny's `shapes`, openvla-tiny's `robot`);
the recipe is composed only when a default is needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlx.cli import data_check
from vlx.config import compose, to_plain, with_recipe


def recipe_defaults(recipe: str, key: str) -> dict[str, Any]:
    """The `key` node of a tiny recipe (e.g. llava-tiny's `shapes`), resolved."""
    return to_plain(compose([f"recipe={recipe}"])[key])


def fill_defaults(args: argparse.Namespace, recipe: str, key: str, names: dict[str, str]) -> None:
    """Replace unset options (None) by the recipe's values; `names` maps option → recipe field."""
    if any(getattr(args, option) is None for option in names):
        defaults = recipe_defaults(recipe, key)
        for option, field in names.items():
            if getattr(args, option) is None:
                setattr(args, option, defaults[field])


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="vlx data",
                                   description="Generate built-in datasets and assets; check datasets.")
    sub = root.add_subparsers(dest="what", required=True)
    shapes = sub.add_parser("shapes", help="the synthetic shapes image-QA dataset (LLaVA JSON + PNGs)")
    shapes.add_argument("--out", help="output directory (default: llava-tiny's shapes.root)")
    for flag in ("n_train", "n_val", "seed", "image_size"):
        shapes.add_argument(f"--{flag.replace('_', '-')}", type=int, help=f"default: llava-tiny's shapes.{flag}")
    assets = sub.add_parser("assets", help="tiny tokenizer + random vision/Llama checkpoints of a tiny recipe")
    assets.add_argument("overrides", nargs="*", help="Hydra overrides (default recipe: llava-tiny)")
    reach = sub.add_parser("block-reach", help="noisy scripted-expert demos of the block-reach task (robomimic HDF5)")
    reach.add_argument("--demos", type=int,
                       help="number of successful demos to keep (default: openvla-tiny's robot.demos)")
    reach.add_argument("--out", help="output file (.hdf5) (default: openvla-tiny's robot.path)")
    reach.add_argument("--seed", type=int, help="default: openvla-tiny's robot.seed")
    reach.add_argument("--valid-fraction", type=float, default=0.1, help="valid share (default: %(default)s)")
    reach.add_argument("--noise", type=float, default=0.3, help="std of the executed-move noise (default: %(default)s)")
    world = sub.add_parser("metaworld", help="scripted-expert demos of Meta-World tasks (robomimic HDF5; needs "
                           "vlx[metaworld])")
    world.add_argument("--tasks", required=True, help="comma-separated task names (push-v3, ...) and groups: easy, "
                       "medium, hard, very-hard, mt10, mt50")
    world.add_argument("--demos", type=int, required=True, help="successful demos to keep per task")
    world.add_argument("--out", required=True, help="output file (.hdf5)")
    world.add_argument("--seed", type=int, default=0, help="episode k uses env seed seed*1000003+k "
                       "(default: %(default)s)")
    world.add_argument("--image-size", type=int, default=64, help="camera frames are S x S (default: %(default)s)")
    world.add_argument("--camera", action="append", help="a Meta-World camera; repeat for several (default: corner2, "
                       "LeRobot's view)")
    world.add_argument("--max-steps", type=int, default=500, help="episode length limit (default: %(default)s)")
    world.add_argument("--valid-fraction", type=float, default=0.1, help="valid share of each task's demos "
                       "(default: %(default)s)")
    text = sub.add_parser("block-reach-text",
                          help="captions + questions on the frames of block-reach demos (LLaVA JSON)")
    text.add_argument("--demos", help="the demo file (default: openvla-tiny's robot.path)")
    text.add_argument("--out", help="output directory (default: openvla-tiny's robot.scene)")
    data_check.add_parser(sub)
    convert = sub.add_parser("convert", help="robomimic HDF5 -> LeRobot v3.0 directory, or LeRobot (v3.0/v2.1) -> "
                             "robomimic HDF5 (the direction follows SRC)")
    convert.add_argument("src", help="a robomimic .hdf5 file or a LeRobot dataset directory")
    convert.add_argument("out", help="the LeRobot directory or the .hdf5 file to write (replaced if it exists)")
    convert.add_argument("--camera-key", action="append", help="a camera to convert; repeat (default: every camera)")
    convert.add_argument("--state-key", action="append", help="a state key; repeat, in order (default: robomimic: "
                         "every low-dim obs key; LeRobot: observation.state)")
    convert.add_argument("--no-state", action="store_true", help="write no state")
    convert.add_argument("--fps", type=int, default=10, help="robomimic -> LeRobot: frames per second (robomimic "
                         "stores none; default: %(default)s)")
    convert.add_argument("--instruction", help="robomimic -> LeRobot: the task of demos without ep_meta 'lang'")
    convert.add_argument("--vcodec", default="libsvtav1", choices=["libsvtav1", "h264"],
                         help="robomimic -> LeRobot: video codec (default: LeRobot's, %(default)s)")
    return root


def convert(args: argparse.Namespace) -> None:
    """`vlx data convert SRC OUT`: the direction follows SRC (a LeRobot directory or an HDF5 file)."""
    from rich.console import Console
    from rich.progress import Progress

    from vlx.data import lerobot_convert
    from vlx.data.lerobot import is_lerobot_dir
    from vlx.errors import ConfigError

    src, out = Path(args.src).expanduser(), Path(args.out).expanduser()
    states = [] if args.no_state else args.state_key
    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("converting", total=None)
        step = lambda what, n: bar.update(task, description=f"converting: {what}", advance=n)  # noqa: E731
        if is_lerobot_dir(src):
            summary = lerobot_convert.to_robomimic(src, out, args.camera_key, states, progress=step)
            print(f"robomimic={out} demos={summary['demos']} samples={summary['samples']} "
                  f"cameras={','.join(summary['cameras'])} state_keys={','.join(summary['state_keys']) or 'none'}")
        elif src.is_file():
            info = lerobot_convert.to_lerobot(src, out, args.fps, args.camera_key, states, args.instruction,
                                              args.vcodec, progress=step)
            print(f"lerobot={out} episodes={info['total_episodes']} frames={info['total_frames']} "
                  f"tasks={info['total_tasks']} splits={','.join(info['splits'])}")
            for mask in info["skipped_masks"]:
                print(f"note: mask/{mask} is not a contiguous range of episodes, so it is no split of info.json")
        else:
            raise ConfigError(f"{src}: neither a LeRobot dataset directory (with meta/info.json) nor a robomimic "
                              "HDF5 file")


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.what == "check":
        data_check.run(args)
    elif args.what == "convert":
        convert(args)
    elif args.what == "shapes":
        from vlx.data.shapes import generate_shapes

        fill_defaults(args, "llava-tiny", "shapes", {"out": "root", "n_train": "n_train", "n_val": "n_val",
                                                     "seed": "seed", "image_size": "image_size"})
        dataset = generate_shapes(args.out, n_train=args.n_train, n_val=args.n_val, seed=args.seed,
                                  image_size=args.image_size)
        for split in ("train", "val"):
            print(f"captions[{split}]={dataset.captions(split)}")
            print(f"questions[{split}]={dataset.questions(split)}")
        print(f"image_dir={dataset.image_dir}")
    elif args.what == "block-reach":
        from vlx.envs.record import record_demos

        fill_defaults(args, "openvla-tiny", "robot", {"out": "path", "demos": "demos", "seed": "seed"})
        summary = record_demos(Path(args.out).expanduser(), args.demos, seed=args.seed,
                               valid_fraction=args.valid_fraction, noise=args.noise)
        print(f"demos={summary.demos}")
        print(f"samples={summary.samples}")
        print(f"discarded={summary.discarded}")
        print(f"expert_success_rate={summary.expert_success_rate:.3f}")
        print(f"path={summary.path}")
    elif args.what == "metaworld":
        from vlx.envs.metaworld_record import record_metaworld

        recording = record_metaworld(Path(args.out).expanduser(), args.tasks, args.demos, seed=args.seed,
                                     valid_fraction=args.valid_fraction, cameras=args.camera or "corner2",
                                     image_size=args.image_size, max_steps=args.max_steps)
        for task in recording.tasks:
            print(f"rejected[{task}]={recording.rejected[task]} "
                  f"expert_success_rate[{task}]={recording.expert_success_rate(task):.3f}")
        print(f"tasks={len(recording.tasks)}")
        print(f"demos={recording.demos}")
        print(f"samples={recording.samples}")
        print(f"rejected={sum(recording.rejected.values())}")
        print(f"path={recording.path}")
    elif args.what == "block-reach-text":
        from vlx.envs.scene_text import write_scene_texts

        fill_defaults(args, "openvla-tiny", "robot", {"demos": "path", "out": "scene"})
        for split, written in write_scene_texts(Path(args.demos).expanduser(), Path(args.out).expanduser()).items():
            print(f"questions[{split}]={written.json_path} samples={written.samples}")
    else:
        from vlx.data.tiny_assets import write_tiny_assets

        cfg = compose(with_recipe(args.overrides))
        write_tiny_assets(to_plain(cfg.vision), to_plain(cfg.llm), seed=cfg.seed)
        print(f"assets={to_plain(cfg.paths.assets)}")
