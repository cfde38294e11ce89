"""A plain, framework-neutral directory for any vlx model: safetensors weights + one JSON config.

Layout: `model.safetensors` (the model's state dict under vlx's parameter names), `config.json`
(`{"format": "vlx-plain", "format_version", "vlx_config", "action_stats", "metadata"}` — the vlx config
with exact architectures and no external sources, the action statistics per dataset in OpenVLA's key
names, and the checkpoint's metadata) and `tokenizer/` (the tokenizer as transformers saves it). Any
tool that reads safetensors and JSON can use it; `import_plain` turns it back into a vlx checkpoint
whose tensors, config, tokenizer and statistics are exactly the exported ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_model

from vlx.checkpoint import checkpoint_config, load, read_metadata
from vlx.data.action_stats import stats_from_table, stats_table
from vlx.errors import CheckpointError, DataError
from vlx.interop.assemble import write_checkpoint
from vlx.interop.tensors import read_safetensors_dir

FORMAT, FORMAT_VERSION = "vlx-plain", 1
LAYOUT = "vlx plain directory"


def export_plain(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the vlx checkpoint `checkpoint` as a plain directory `out`; returns `out`."""
    model = load(checkpoint)
    target = Path(out).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    save_model(model, str(target / "model.safetensors"), metadata={"format": "pt"})
    model.tokenizer.save_pretrained(target / "tokenizer")
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "vlx_config": checkpoint_config(model),
        "action_stats": stats_table(model.action_stats), "metadata": read_metadata(checkpoint),
    }
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target


def import_plain(src: str | Path, out: str | Path) -> Path:
    """Turn the plain directory `src` back into a vlx checkpoint directory `out`; returns `out`."""
    root = Path(src).expanduser()
    path = root / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the plain directory's config ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: 'format' is {config.get('format') if isinstance(config, dict) else None!r}; "
                              f"expected {FORMAT!r} (written by `vlx export plain`)")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {config.get('format_version')!r}; "
                              f"this vlx reads version {FORMAT_VERSION}")
    vlx_config = dict(config["vlx_config"])
    vlx_config["llm"] = {**vlx_config["llm"], "tokenizer": str(root / "tokenizer")}
    try:
        stats = stats_from_table(config.get("action_stats") or {}, f"{path}: action_stats")
    except DataError as exc:
        raise CheckpointError(str(exc)) from None
    metadata = {k: v for k, v in (config.get("metadata") or {}).items() if k not in ("format_version", "parameters")}
    return write_checkpoint(vlx_config, read_safetensors_dir(root), out, str(root), LAYOUT, action_stats=stats,
                            metadata=metadata)
