"""`vlx bench train-step|predict-action|action-rate|loader|quantize|gpu`: benchmarks of vlx against the reference
implementations (quantize: a quantised VLA against its full-precision self).

Each prints a table and, as its last line, `ratio=...` with what the ratio means and its target
(docs/BENCHMARKS.md records the measured results). Every benchmark takes `--threads` (the same intra-op
thread count for both sides; default 1 for the CPU benchmarks: more threads on a shared CPU
oversubscribe it and the medians become noise), `--warmup` and `--repeats`; the CPU ones take `--size
tiny|small` (small is the measured one), `quantize` also `--checkpoint`, `--demos`, `--mode`, `--limit`, and
`gpu` takes `--tiny`, `--layers`, `--batch-size`, `--recipes`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from vlx.bench.models import SIZES

DEFAULTS = {  # name → (warm-up rounds, timed rounds, one-line help)
    "train-step": (3, 10, "vlx LLaVA training step vs transformers LlavaForConditionalGeneration in a plain loop"),
    "predict-action": (3, 20, "vlx predict_action vs OpenVLA-style generate() on the same weights"),
    "action-rate": (2, 10, "actions/s: OpenVLA-style generate() vs vlx's autoregressive, parallel, L1 and flow heads"),
    "loader": (1, 5, "vlx robomimic loader vs robomimic SequenceDataset + DataLoader on the same file"),
    "quantize": (2, 10, "a VLA quantised (quantize=int8) vs full precision: action agreement, weight memory, time"),
    "gpu": (2, 5, "7B-shaped recipes in bf16: training tokens/s, MFU, predict_action Hz, peak memory"),
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="vlx bench", description="Benchmarks against the reference implementations "
                                   "(docs/BENCHMARKS.md).")
    sub = root.add_subparsers(dest="name", required=True)
    for name, (warmup, repeats, help_text) in DEFAULTS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--threads", type=int, default=1 if name != "gpu" else None,
                             help="torch intra-op threads for both sides (default: 1 on the CPU benchmarks — on a "
                                  "shared CPU more threads oversubscribe it —, torch's own for gpu)")
        command.add_argument("--warmup", type=int, default=warmup, help="untimed rounds (default: %(default)s)")
        command.add_argument("--repeats", type=int, default=repeats, help="timed rounds (default: %(default)s)")
        if name == "gpu":
            command.add_argument("--tiny", action="store_true", help="tiny models instead of the 7B recipes (CPU test)")
            command.add_argument("--layers", type=int, help="LLM layer count (default: the recipe's, 32)")
            command.add_argument("--batch-size", type=int, default=8, help="samples per training step (default: 8)")
            command.add_argument("--recipes", default="prism-dinosiglip-224px-7b,openvla-7b,llava-v1.5-7b",
                                 help="comma-separated recipes (default: %(default)s)")
        else:
            if name == "quantize":
                command.add_argument("--checkpoint", help="a trained VLA checkpoint (default: a random VLA of --size)")
                command.add_argument("--demos", help="robomimic HDF5 of held-out steps (default: the checkpoint's "
                                                     "eval.demos; split valid)")
                command.add_argument("--mode", default="int8", help="int8 | int8-dynamic (default: %(default)s)")
                command.add_argument("--limit", type=int, default=64, help="demo steps compared (default: 64)")
            command.add_argument("--size", choices=SIZES, default="small", help="model/data size (default: small)")
    return root


def runner(args: argparse.Namespace) -> Callable[[], Any]:
    """The benchmark call the parsed arguments describe."""
    common = {"warmup": args.warmup, "repeats": args.repeats, "threads": args.threads}
    if args.name == "train-step":
        from vlx.bench import train_step

        return lambda: train_step.run(args.size, **common)
    if args.name == "predict-action":
        from vlx.bench import predict_action

        return lambda: predict_action.run(args.size, **common)
    if args.name == "action-rate":
        from vlx.bench import action_rate

        return lambda: action_rate.run(args.size, **common)
    if args.name == "loader":
        from vlx.bench import loader

        return lambda: loader.run(args.size, **common)
    if args.name == "quantize":
        from vlx.bench import quantize

        return lambda: quantize.run(args.checkpoint, args.demos, args.mode, args.limit, args.size, **common)
    from vlx.bench import gpu

    recipes = tuple(name.strip() for name in args.recipes.split(",") if name.strip())
    return lambda: gpu.run(recipes, layers=args.layers, batch_size=args.batch_size, tiny=args.tiny, **common)


def main(argv: list[str]) -> None:
    from vlx.bench.timing import report
    from vlx.errors import ConfigError

    args = parser().parse_args(argv)
    for option in ("warmup", "repeats", "threads", "layers", "batch_size", "limit"):
        value = getattr(args, option, None)
        if value is not None and value < (0 if option == "warmup" else 1):
            raise ConfigError(f"vlx bench {args.name}: --{option.replace('_', '-')}={value}; expected "
                              f"{'a count ≥ 0' if option == 'warmup' else 'a count ≥ 1'}")
    report(runner(args)())
