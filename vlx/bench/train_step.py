"""`vlx bench train-step`: a vlx LLaVA-family training step against transformers' LLaVA in a plain loop.

Both sides train the same model from the same weights on the same batch with the same threads: vlx
builds a random LLaVA-family model (`vlx.bench.models`), exports it with `vlx export hf-llava`'s code
and transformers opens it as `LlavaForConditionalGeneration`. The stage is LLaVA's finetune (projector
+ LLM train, vision frozen), AdamW at a constant learning rate, gradients clipped to norm 1.0. vlx runs
its real training loop (`VlxModule` in a Lightning `Trainer`); the reference is a plain PyTorch loop
(forward with `labels`, backward, clip, AdamW step). A callback interleaves them: every Lightning
step is followed (even rounds) or preceded (odd rounds) by one reference step, and each side is timed
on its own. The batch is real vlx data: shapes questions through the `llava-json` dataset and collator.
The first step's losses must agree within fp32 tolerance, else a `BenchmarkError`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from vlx.bench.models import build, llava_config, write_tokenizer
from vlx.bench.timing import BenchmarkError, BenchResult, medians, set_threads

BATCH = {"tiny": 2, "small": 8}
LR = 1e-4
LOSS_TOLERANCE = 1e-5  # relative, fp32


def stage(batch_size: int) -> dict[str, Any]:
    """LLaVA's finetune stage at a constant learning rate (vlx's stage keys)."""
    return {"trainable": ["projector", "llm"], "lr": LR, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8,
            "schedule": "constant", "warmup_ratio": 0.0, "batch_size": batch_size, "max_grad_norm": 1.0}


def shapes_batch(model: Any, root: Path, batch_size: int) -> dict[str, Any]:
    """`batch_size` shapes questions, tokenised and collated by vlx's own dataset and collator."""
    from vlx.data.collate import Collator
    from vlx.data.shapes import generate_shapes
    from vlx.training.datamodule import build_dataset

    data = generate_shapes(root, n_train=batch_size, n_val=1, seed=0, image_size=max(48, model.vision.image_size))
    node = {"name": "llava-json", "json_path": str(data.questions("train")), "image_dir": str(data.image_dir)}
    dataset = build_dataset(node, "bench.data", model, training=True)
    return Collator(model.tokenizer.pad_token_id)([dataset[i] for i in range(batch_size)])


def reference_model(model: Any, root: Path) -> Any:
    """transformers' LlavaForConditionalGeneration holding exactly `model`'s weights, finetune-frozen."""
    from transformers import LlavaForConditionalGeneration

    from vlx.checkpoint import save_checkpoint
    from vlx.hub import SAFE_LOADING
    from vlx.interop.hf_llava import export_hf_llava

    save_checkpoint(model, root / "vlx")
    export_hf_llava(root / "vlx", root / "hf")
    hf = LlavaForConditionalGeneration.from_pretrained(root / "hf", attn_implementation=model.llm.attn_implementation,
                                                       **SAFE_LOADING)
    hf.model.vision_tower.requires_grad_(False)
    hf.model.vision_tower.eval()
    return hf.train()


class ReferenceLoop:
    """transformers' LLaVA trained the plain-PyTorch way; `step()` returns the loss."""

    def __init__(self, hf: Any, batch: dict[str, Any]) -> None:
        self.hf, self.inputs = hf, {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels")}
        self.params = [p for p in hf.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=LR, weight_decay=0.0)

    def step(self) -> float:
        loss = self.hf(**self.inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


class Interleave(L.Callback):
    """Times each Lightning training step and runs one reference step beside it (after it on even steps,
    before it on odd ones); the first `warmup` steps are not timed."""

    def __init__(self, reference: ReferenceLoop, warmup: int) -> None:
        self.reference, self.warmup = reference, warmup
        self.rounds: dict[str, list[float]] = {"vlx": [], "reference": []}
        self.losses: dict[str, list[float]] = {"vlx": [], "reference": []}
        self._start = 0.0

    def _reference_step(self, index: int) -> None:
        start = time.perf_counter()
        self.losses["reference"].append(self.reference.step())
        if index >= self.warmup:
            self.rounds["reference"].append(time.perf_counter() - start)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, index: int) -> None:
        if index % 2:
            self._reference_step(index)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           index: int) -> None:
        elapsed = time.perf_counter() - self._start
        self.losses["vlx"].append(float(outputs["loss"]))
        if index >= self.warmup:
            self.rounds["vlx"].append(elapsed)
        if index % 2 == 0:
            self._reference_step(index)


def run(size: str = "small", warmup: int = 3, repeats: int = 10, threads: int | None = None,
        device: str = "cpu") -> BenchResult:
    """Time `repeats` steps of each side after `warmup` steps; ratio = vlx / reference time per step."""
    from vlx.training.module import VlxModule
    from vlx.training.stages import apply_stage

    threads = set_threads(threads)
    with tempfile.TemporaryDirectory(prefix="vlx-bench-") as tmp:
        root = Path(tmp)
        model = build(llava_config(size, write_tokenizer(root / "tokenizer")))
        apply_stage(model, stage(BATCH[size])["trainable"])
        batch = shapes_batch(model, root / "shapes", BATCH[size])
        hf = reference_model(model, root).to(device)
        model = model.train().to(device)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    callback = Interleave(ReferenceLoop(hf, batch), warmup)
    steps = warmup + repeats
    trainer = L.Trainer(accelerator=device, devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        gradient_clip_val=1.0, callbacks=[callback])
    loader = torch.utils.data.DataLoader([batch] * steps, batch_size=None)
    trainer.fit(VlxModule(model, stage(BATCH[size])), train_dataloaders=loader)
    first_vlx, first_reference = callback.losses["vlx"][0], callback.losses["reference"][0]
    if abs(first_vlx - first_reference) > LOSS_TOLERANCE * max(1.0, abs(first_reference)):
        raise BenchmarkError(f"train-step: the first losses differ (vlx {first_vlx:.8f}, transformers LLaVA "
                             f"{first_reference:.8f}); the two sides do not train the same model on the same batch")
    times = medians(callback.rounds)
    tokens = int(batch["attention_mask"].sum())
    drift = max(abs(a - b) for a, b in zip(callback.losses["vlx"], callback.losses["reference"], strict=True))
    return BenchResult(
        name="train-step", medians=times, rounds=callback.rounds, ratio=times["vlx"] / times["reference"],
        ratio_label="vlx / transformers LLaVA time per step", target="≤ 1.0",
        rows=[("model", f"{size} LLaVA-family, {sum(p.numel() for p in model.parameters()):,} parameters "
                        f"({sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable)"),
              ("batch", f"{BATCH[size]} samples × {batch['input_ids'].shape[1]} positions, {tokens} tokens"),
              ("threads", str(threads)),
              ("first-step loss", f"vlx {first_vlx:.6f} = reference {first_reference:.6f}"),
              ("max |loss difference| over all steps", f"{drift:.2e}")],
    )
