"""`vlx import FORMAT SRC OUT` and `vlx export FORMAT CKPT OUT`: convert checkpoints between formats.

Import formats: `hf-llava` (a transformers `LlavaForConditionalGeneration` directory), `openvla` (an
OpenVLA or Prismatic Hugging Face checkpoint) and `plain` (a directory written by `vlx export plain`);
each writes a vlx checkpoint directory that `vlx.load` opens. Export formats: `hf-llava` (for LLaVA-family
vlx models) and `plain` (any vlx model). The conversions live in `vlx.interop`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

IMPORTERS = {
    "hf-llava": "a transformers LlavaForConditionalGeneration directory (config, safetensors, tokenizer, processor)",
    "openvla": "an OpenVLA / Prismatic Hugging Face checkpoint directory (model_type openvla or prismatic)",
    "plain": "a directory written by `vlx export plain`",
}
EXPORTERS = {
    "hf-llava": "a directory LlavaForConditionalGeneration/AutoProcessor.from_pretrained open (LLaVA-family models)",
    "plain": "safetensors + config.json + tokenizer/ for any vlx model (`vlx import plain` restores it)",
}


def converter(direction: str, name: str) -> Callable[[Path, Path], Path]:
    from vlx.interop import hf_llava, openvla, plain

    table = {
        ("import", "hf-llava"): hf_llava.import_hf_llava, ("import", "openvla"): openvla.import_openvla,
        ("import", "plain"): plain.import_plain,
        ("export", "hf-llava"): hf_llava.export_hf_llava, ("export", "plain"): plain.export_plain,
    }
    return table[(direction, name)]


def parser(direction: str) -> argparse.ArgumentParser:
    formats = IMPORTERS if direction == "import" else EXPORTERS
    source = "SRC" if direction == "import" else "CKPT"
    root = argparse.ArgumentParser(
        prog=f"vlx {direction}",
        description="Write a vlx checkpoint from another format." if direction == "import"
        else "Write a vlx checkpoint in another format.",
        epilog="formats:\n" + "\n".join(f"  {name:9} {text}" for name, text in formats.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("format", choices=sorted(formats))
    root.add_argument("source", metavar=source, type=Path,
                      help="the directory to convert" if direction == "import" else "a vlx checkpoint directory")
    root.add_argument("out", metavar="OUT", type=Path, help="the directory to write")
    return root


def run(direction: str, argv: list[str]) -> None:
    args = parser(direction).parse_args(argv)
    written = converter(direction, args.format)(args.source, args.out)
    print(f"vlx {direction} {args.format}: wrote {written}")


def import_main(argv: list[str]) -> None:
    run("import", argv)


def export_main(argv: list[str]) -> None:
    run("export", argv)
