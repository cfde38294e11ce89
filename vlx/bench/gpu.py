"""`vlx bench gpu`: training throughput, MFU, `predict_action` rate and peak memory of 7B-shaped recipes.

For each recipe (default `prism-dinosiglip-224px-7b`, `openvla-7b`, `openvla-oft-7b`, `llava-v1.5-7b`) the model
is built with random weights straight on the device in bf16 from the recipe's architecture (no download; the
tokenizer is vlx's tiny one, the 32,064-row vocabulary stays), optionally with fewer LLM layers
(`--layers N`, stated in the output). One training step = forward on a synthetic batch (random images,
random prompt ids, loss on the last `ANSWER` tokens; for a VLA: every camera, the state, a random normalised
chunk and the head's own suffix), backward, AdamW step, over the parts the recipe's last stage trains
(LLaVA's and Prismatic's finetune, OpenVLA's vla; LoRA stages train their named parts, adapters left out).
MFU = the training FLOPs of a step / step time / the device's peak dense bf16 FLOP/s; the FLOPs are the
estimate the training dashboard logs (`vlx.training.throughput.TrainingFlops`: every weight matrix on the
tokens that pass it, attention scores, ×3 for a part that trains, ×2 or ×1 for a frozen one), so the two MFUs
agree. A VLA recipe also times `predict_action` (Hz, and actions/s =
K × Hz for a head that predicts chunks of K). Peak memory is `torch.cuda.max_memory_allocated` of each phase. `--tiny`
swaps the recipes for vlx's tiny benchmark models so the whole script runs on a CPU in seconds (a test
does that).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from vlx.bench.models import build, llava_config, vla_config, write_tokenizer
from vlx.bench.timing import BenchResult, bench_device, interleave, medians, set_threads
from vlx.builder import build_model
from vlx.config import compose
from vlx.data.action_stats import ActionStats
from vlx.model import VisionLanguageModel
from vlx.training.optim import build_optimizer
from vlx.training.stages import apply_stage
from vlx.training.throughput import TrainingFlops, dense_bf16_peak

RECIPES = ("prism-dinosiglip-224px-7b", "openvla-7b", "openvla-oft-7b", "llava-v1.5-7b")
TEXT, ANSWER = 32, 8  # prompt tokens after the image, supervised tokens at the end


@dataclass
class Workload:
    """One model to measure, with the parts its stage trains."""

    name: str
    model: VisionLanguageModel | None
    trainable: list[str]

    def to(self, device: str) -> Workload:
        self.model = self.model.to(device)
        return self


def recipe_workload(recipe: str, tokenizer_dir: Path, layers: int | None, device: str) -> Workload:
    """A recipe's model with random bf16 weights built on `device`; `layers` cuts the LLM's layer count."""
    cfg = compose([f"recipe={recipe}"])
    nodes = {key: OmegaConf.to_container(cfg[key], resolve=True) if cfg.get(key) is not None else None
             for key in ("vision", "projector", "llm", "head", "proprio", "observation")}
    last = cfg.train.stages[-1]  # the stage that trains the LLM (LLaVA's finetune, OpenVLA's vla)
    nodes["prompt"] = OmegaConf.to_container(cfg.stages[last].prompt, resolve=True)
    trainable = list(cfg.stages[last].trainable)
    nodes["llm"].update(source=None, tokenizer=str(tokenizer_dir), dtype="bfloat16")
    if layers is not None:
        nodes["llm"]["config"]["num_hidden_layers"] = layers
    if "tokens" in nodes["head"]:  # the tiny tokenizer has no 32000-token base vocabulary
        nodes["head"].update(tokens="new", base_vocab_size=None)
    with torch.device(device):
        model = build_model(nodes, load_weights=False)
    return Workload(recipe + (f" ({layers} LLM layers)" if layers is not None else ""),
                    model.to(torch.bfloat16), trainable)


def tiny_workloads(tokenizer_dir: Path) -> list[Workload]:
    """vlx's tiny benchmark models in place of the recipes (CPU, fp32)."""
    oft = {**vla_config("tiny", tokenizer_dir), "head": {"name": "l1-regression", "action_dim": 7, "chunk_size": 8},
           "observation": {"cameras": ["third_person", "wrist"]}, "proprio": {"name": "mlp", "in_dim": 8}}
    return [Workload("tiny llava-family", build(llava_config("tiny", tokenizer_dir)), ["projector", "llm"]),
            Workload("tiny openvla-family", build(vla_config("tiny", tokenizer_dir)), ["vision", "projector", "llm"]),
            Workload("tiny openvla-oft-family", build(oft), ["vision", "projector", "proprio", "llm", "head"])]


def synthetic_batch(model: VisionLanguageModel, batch_size: int, device: str) -> dict[str, Any]:
    """Random images and ids: BOS, the image slot, TEXT prompt ids, loss on the last ANSWER ids; for a VLA the
    observation slot (every camera, the state token), TEXT prompt ids and the head's suffix for a random chunk."""
    generator = torch.Generator().manual_seed(0)
    size = model.vision.image_size
    channels = 3 * len(getattr(model.vision, "members", [None]))
    text = torch.randint(10, 300, (batch_size, TEXT), generator=generator)  # ordinary token ids
    slots = model.observation_tokens if model.is_vla else model.vision.num_patches
    bos = torch.full((batch_size, 1), model.tokenizer.bos_token_id)
    ids = torch.cat([bos, torch.full((batch_size, slots), model.llm.image_token_id), text], dim=1)  # (B, 1 + P + TEXT)
    batch: dict[str, Any] = {"ids": [str(i) for i in range(batch_size)]}
    if model.is_vla:
        head, cameras = model.action_head, model.observation.cameras
        chunk = torch.rand((batch_size, *head.chunk_shape), generator=generator) * 2 - 1  # (B, K, A)
        suffix = [head.sequence(row.numpy()) for row in chunk]
        ids = torch.cat([ids, torch.tensor([s.input_ids for s in suffix], dtype=ids.dtype)], dim=1)
        labels = torch.cat([torch.full((batch_size, ids.shape[1] - len(suffix[0].labels)), -100),
                            torch.tensor([s.labels for s in suffix])], dim=1)
        if head.one_pass:
            batch["action_slots"] = torch.tensor([[False] * (ids.shape[1] - len(s.slots)) + s.slots for s in suffix])
        batch.update(actions=chunk, action_mask=torch.ones(chunk.shape[:2], dtype=torch.bool))
        if model.observation.state_dim:
            batch["state"] = torch.rand((batch_size, model.observation.state_dim), generator=generator) * 2 - 1
        shape = (batch_size, len(cameras), channels, size, size) if cameras else (batch_size, channels, size, size)
    else:
        labels = torch.full_like(ids, -100)
        labels[:, -ANSWER:] = ids[:, -ANSWER:]
        shape = (batch_size, channels, size, size)
    batch.update(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                 pixel_values=torch.randn(shape, generator=generator))
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def peak_flops(device: str) -> float | None:
    return dense_bf16_peak(torch.cuda.get_device_name(0)) if device.startswith("cuda") else None


def measure(work: Workload, batch_size: int, warmup: int, repeats: int, device: str) -> dict[str, Any]:
    """Training step time, tokens/s, MFU, predict_action time and peak memory of one workload."""
    model = work.model
    apply_stage(model, work.trainable)
    model.train()
    batch = synthetic_batch(model, batch_size, device)
    optimizer = build_optimizer(model, {"weight_decay": 0.0, "lr": 1e-5, "betas": [0.9, 0.999], "eps": 1e-8})
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def train_step() -> None:
        model(batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    step = medians(interleave({"step": train_step}, warmup, repeats))["step"]
    result = {"workload": work.name, "step_s": step, "tokens_per_s": batch["input_ids"].numel() / step,
              "params": count(model), "train_memory_gb": _peak_gb(device)}
    peak = peak_flops(device)
    result["mfu"] = TrainingFlops(model)(batch) / step / peak if peak else None
    optimizer.state.clear()  # frees the Adam moments before inference (train_step keeps the optimizer itself)
    model.eval()
    if model.is_vla:
        rng = np.random.default_rng(0)
        model.action_stats["bench"] = ActionStats.from_actions(
            rng.uniform(-1, 1, size=(100, model.action_dim)).astype(np.float32), num_trajectories=1)
        state = None
        if model.observation.state_dim:
            dim = model.observation.state_dim
            model.state_stats["bench"] = ActionStats.from_actions(
                rng.uniform(-1, 1, size=(100, dim)).astype(np.float32), num_trajectories=1, mask=[True] * dim)
            state = rng.uniform(-1, 1, size=dim)
        image = np.random.default_rng(1).integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
        cameras = model.observation.cameras
        images = {name: image for name in cameras} if cameras else image
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

        def predict() -> None:
            model.predict_action(images, "pick up the red block", "bench", state=state)
            sync()

        call = medians(interleave({"predict": predict}, warmup, repeats))["predict"]
        result.update(predict_hz=1 / call, actions_per_s=model.chunk_size / call, predict_memory_gb=_peak_gb(device))
    return result


def _peak_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def run(recipes: tuple[str, ...] = RECIPES, layers: int | None = None, batch_size: int = 8, warmup: int = 2,
        repeats: int = 5, tiny: bool = False, threads: int | None = None, device: str | None = None) -> BenchResult:
    """Measure every workload one after the other (each freed before the next); ratio = the best MFU (0 on CPU)."""
    device = bench_device(device)
    threads = set_threads(threads)
    results: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="vlx-bench-") as tmp:
        tokenizer_dir = write_tokenizer(Path(tmp) / "tokenizer")
        names = ["tiny"] if tiny else list(recipes)
        for name in names:
            works = tiny_workloads(tokenizer_dir) if tiny else [recipe_workload(name, tokenizer_dir, layers, device)]
            for work in works:
                started = time.perf_counter()
                try:
                    results.append({**measure(work.to(device), batch_size, warmup, repeats, device),
                                    "seconds": time.perf_counter() - started})
                except torch.cuda.OutOfMemoryError:  # report it and go on with the next recipe
                    failed.append((work.name, f"out of memory at batch {batch_size}: rerun with --layers N "
                                              "or a smaller --batch-size"))
                work.model = None
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    mfus = [r["mfu"] for r in results if r["mfu"] is not None]
    rows = [(r["workload"], _describe(r, batch_size)) for r in results] + failed
    return BenchResult(
        name="gpu", medians={r["workload"]: r["step_s"] for r in results},
        rounds={r["workload"]: [r["step_s"]] for r in results}, ratio=max(mfus) if mfus else 0.0,
        ratio_label="the best MFU (model FLOPs / step time / peak bf16 FLOP/s; 0 where the peak is unknown)",
        target="as high as the recipe allows", per="training step",
        rows=[("device", f"{device} ({torch.cuda.get_device_name(0) if device.startswith('cuda') else 'CPU'}), "
                         f"{threads} threads, batch {batch_size}"), *rows],
        notes=["FLOPs/step: the training dashboard's estimate (vlx/training/throughput.py TrainingFlops)"],
    )


def _describe(result: dict[str, Any], batch_size: int) -> str:
    parts = [f"{result['params'] / 1e9:.2f}B params", f"{result['tokens_per_s']:.0f} tokens/s",
             f"step {result['step_s']:.3f} s"]
    if result["mfu"] is not None:
        parts.append(f"MFU {result['mfu']:.1%}")
    if result["train_memory_gb"] is not None:
        parts.append(f"train peak {result['train_memory_gb']:.1f} GiB")
    if "predict_hz" in result:
        parts.append(f"predict_action {result['predict_hz']:.1f} Hz ({result['actions_per_s']:.1f} actions/s)")
        if result.get("predict_memory_gb") is not None:
            parts.append(f"predict peak {result['predict_memory_gb']:.1f} GiB")
    parts.append(f"measured in {result['seconds']:.0f} s")
    return ", ".join(parts)
