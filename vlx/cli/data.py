"""`vlx data shapes` and `vlx data assets`: the built-in synthetic dataset and the tiny local assets."""

from __future__ import annotations

import argparse

from vlx.builder import to_plain
from vlx.config import compose, with_recipe
from vlx.data.shapes import generate_shapes


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="vlx data", description="Generate built-in datasets and assets.")
    sub = parser.add_subparsers(dest="what", required=True)
    shapes = sub.add_parser("shapes", help="the synthetic shapes image-QA dataset (LLaVA JSON + PNGs)")
    defaults = to_plain(compose(["recipe=llava-tiny"])["shapes"])  # what llava-tiny trains on
    shapes.add_argument("--out", default=defaults["root"], help="output directory (default: %(default)s)")
    for flag in ("n_train", "n_val", "seed", "image_size"):
        shapes.add_argument(f"--{flag.replace('_', '-')}", type=int, default=defaults[flag], help="default: %(default)s")
    assets = sub.add_parser("assets", help="tiny tokenizer + random CLIP/Llama checkpoints of a tiny recipe")
    assets.add_argument("overrides", nargs="*", help="Hydra overrides (default recipe: llava-tiny)")
    args = parser.parse_args(argv)
    if args.what == "shapes":
        dataset = generate_shapes(args.out, n_train=args.n_train, n_val=args.n_val, seed=args.seed, image_size=args.image_size)
        for split in ("train", "val"):
            print(f"captions[{split}]={dataset.captions(split)}")
            print(f"questions[{split}]={dataset.questions(split)}")
        print(f"image_dir={dataset.image_dir}")
    else:
        from vlx.data.tiny_assets import write_tiny_assets

        cfg = compose(with_recipe(args.overrides))
        write_tiny_assets(to_plain(cfg.vision), to_plain(cfg.llm), seed=cfg.seed)
        print(f"assets={to_plain(cfg.paths.assets)}")
