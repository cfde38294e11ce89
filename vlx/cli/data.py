"""`vlx data shapes` and `vlx data assets`: the built-in synthetic dataset and the tiny local assets."""

from __future__ import annotations

import argparse

from vlx.builder import to_plain
from vlx.config import compose
from vlx.data.shapes import generate_shapes


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="vlx data", description="Generate built-in datasets and assets.")
    sub = parser.add_subparsers(dest="what", required=True)
    shapes = sub.add_parser("shapes", help="the synthetic shapes image-QA dataset (LLaVA JSON + PNGs)")
    shapes.add_argument("--out", required=True, help="output directory")
    shapes.add_argument("--n-train", type=int, default=4000)
    shapes.add_argument("--n-val", type=int, default=400)
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--image-size", type=int, default=48)
    assets = sub.add_parser("assets", help="tiny tokenizer + random CLIP/Llama checkpoints of a tiny recipe")
    assets.add_argument("overrides", nargs="*", default=["recipe=llava-tiny"], help="Hydra overrides")
    args = parser.parse_args(argv)
    if args.what == "shapes":
        dataset = generate_shapes(args.out, n_train=args.n_train, n_val=args.n_val, seed=args.seed, image_size=args.image_size)
        for split in ("train", "val"):
            print(f"captions[{split}]={dataset.captions(split)}")
            print(f"questions[{split}]={dataset.questions(split)}")
        print(f"image_dir={dataset.image_dir}")
    else:
        from vlx.data.tiny_assets import write_tiny_assets

        cfg = to_plain(compose(args.overrides))
        write_tiny_assets(cfg["vision"], cfg["llm"], seed=cfg["seed"])
        print(f"vision={cfg['vision']['source']}")
        print(f"llm={cfg['llm']['source']}")
