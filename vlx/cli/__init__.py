"""The `vlx` command: `vlx train|eval|info|data|demo|serve|import|export|bench ...`.

Hydra-style commands (`train`, `eval`, `info`) take `key=value` overrides and `recipe=NAME`; `data`,
`demo`, `serve`, `import`, `export` and `bench` are plain commands. A VlxError (a mistake in a config, dataset or
checkpoint) is printed as one line naming what was wrong and where, with exit status 2 — never a stack trace.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable

USAGE = """usage: vlx COMMAND [ARGS]

commands:
  demo   [recipe=NAME] [overrides] tiny assets + data, train a tiny recipe (default llava-tiny), evaluate (CPU)
  train  recipe=NAME [overrides]   train the stages of a recipe (Hydra; -m for sweeps)
  eval   checkpoint=DIR [overrides] VLM: exact-match accuracy + blank-image control; VLA: closed-loop success
  info   recipe=NAME [overrides]   build the model on the meta device and print parameter counts
  data   shapes|assets|block-reach  generate the shapes dataset, the tiny assets or block-reach robot demos
  data   check PATH [options]       list every problem of a LLaVA JSON or robomimic HDF5 file (docs/errors.md)
  serve  checkpoint=DIR [protocol=vlx|openvla|openpi]  serve a VLA's actions (REST /act or openpi websocket)
  import hf-llava|openvla|plain SRC OUT  convert a transformers LLaVA / OpenVLA / plain dir to a vlx checkpoint
  export hf-llava|plain CKPT OUT  write a vlx checkpoint as a transformers LLaVA dir or a plain dir (docs/formats.md)
  bench  train-step|predict-action|action-rate|loader|gpu  time vlx against the reference implementations \
(docs/BENCHMARKS.md)

recipes: {recipes}
"""


COMMANDS = {  # command → (module, function); only the command that runs is imported (`vlx --help` needs no torch)
    "train": ("vlx.cli.hydra_apps", "train"), "eval": ("vlx.cli.hydra_apps", "evaluate"),
    "info": ("vlx.cli.hydra_apps", "info"), "data": ("vlx.cli.data", "main"), "demo": ("vlx.cli.demo", "main"),
    "serve": ("vlx.cli.serve", "main"), "import": ("vlx.cli.interop", "import_main"),
    "export": ("vlx.cli.interop", "export_main"), "bench": ("vlx.cli.bench", "main"),
}


def command(name: str) -> Callable[[list[str]], None]:
    """The function that runs `vlx NAME ARGS`."""
    module, function = COMMANDS[name]
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `vlx` console script."""
    from vlx.config import recipe_names
    from vlx.errors import VlxError

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help") or args[0] not in COMMANDS:
        if args and args[0] not in ("-h", "--help", "help"):
            print(f"vlx: unknown command {args[0]!r}", file=sys.stderr)
        print(USAGE.format(recipes=", ".join(recipe_names())), file=sys.stderr)
        raise SystemExit(0 if args and args[0] in ("-h", "--help", "help") else 2)
    # transformers imports torchao when it is installed (vlx[quantize]), and torch then logs two lines about
    # torchao's enums on every command; they say nothing about the user's run
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    try:
        command(args[0])(args[1:])
    except VlxError as exc:
        message = str(exc)
        if "Original Traceback" in message:  # re-raised from a DataLoader worker: keep the original message
            message = message.strip().splitlines()[-1].split(": ", 1)[-1]
        print(f"vlx {args[0]}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
