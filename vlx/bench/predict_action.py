"""`vlx bench predict-action`: vlx's `predict_action` against an OpenVLA-style reference on the same weights.

The model is a random OpenVLA-family VLA (`vlx.bench.models.vla_config`: fused DINOv2 + SigLIP-style
towers, fused MLP, Llama with a 32,064-row vocabulary, 7-D actions). Its output layer is zero outside the
256 action tokens, so the reference's unconstrained greedy choice is always an action token and both
sides must return identical actions (as a trained OpenVLA's does). The reference follows OpenVLA's
`PrismaticForConditionalGeneration.predict_action`: the prompt's ids with the patch embeddings inserted
after BOS, transformers' `generate(max_new_tokens=action_dim, do_sample=False)`, then the same
de-tokenisation (bin centres) and un-normalisation as vlx. Different actions raise a `BenchmarkError`.
The ratio is reference time / vlx time per call (how many times faster vlx is); two more contenders time
the decoding alone (prefill + `action_dim` tokens from the same prompt embeddings: vlx's constrained
KV-cached loop vs `generate()`), where the two sides differ, and two the parts both sides share (image
transform + vision towers + projector; the LLM's pass over the prompt).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from vlx.bench.models import build, roughen, vla_config, write_tokenizer
from vlx.bench.timing import BenchmarkError, BenchResult, interleave, medians, set_threads
from vlx.data.action_stats import ActionStats
from vlx.data.augment import inference_preprocess
from vlx.heads.action_decoding import decode_action_tokens
from vlx.heads.instruction import vla_question
from vlx.llm.prompts import question_ids
from vlx.model import VisionLanguageModel
from vlx.vision.transforms import as_rgb_image

INSTRUCTION = "move to the red block"
UNNORM_KEY = "bench"


def action_only_outputs(model: VisionLanguageModel) -> None:
    """Zero the output rows of every token but the action tokens (a trained VLA's greedy choice is one)."""
    codec = model.action_head.codec
    with torch.no_grad():
        head = model.llm.model.get_output_embeddings().weight  # (V, D)
        head[: codec.first_id].zero_()
        head[codec.top_id :].zero_()


def bench_vla(size: str, root: Path, action_dim: int = 7, seed: int = 0) -> VisionLanguageModel:
    """The benchmark's VLA: random weights (std 0.2), action-only outputs, statistics `bench`."""
    model = roughen(build(vla_config(size, write_tokenizer(root / "tokenizer"), action_dim), seed)).eval()
    action_only_outputs(model)
    actions = np.random.default_rng(seed).uniform(-2.0, 2.0, size=(500, action_dim)).astype(np.float32)
    model.action_stats[UNNORM_KEY] = ActionStats.from_actions(actions, num_trajectories=10)
    return model


@torch.no_grad()
def reference_predict_action(model: VisionLanguageModel, image: np.ndarray, instruction: str) -> np.ndarray:
    """OpenVLA's predict_action on `model`'s weights: patches after BOS, `generate()`, de-tokenise, un-normalise."""
    device = next(model.parameters()).device
    head, lm = model.action_head, model.llm.model
    prompt = question_ids(model.prompt_format, vla_question(instruction), model.tokenizer, None, 0)  # no image slot
    ids = torch.tensor([prompt], device=device)  # (1, L)
    pixels = model.vision.image_transform(inference_preprocess(model.config.get("augment"))(as_rgb_image(image)))
    patches = model.projector(model.vision(pixels[None].to(device)))  # (1, N, D)
    tokens = lm.get_input_embeddings()(ids)  # (1, L, D)
    embeds = torch.cat([tokens[:, :1], patches, tokens[:, 1:]], dim=1)  # (1, 1 + N + L - 1, D)
    out = lm.generate(inputs_embeds=embeds,
                      attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=device),
                      max_new_tokens=head.action_dim, do_sample=False, pad_token_id=model.tokenizer.pad_token_id,
                      eos_token_id=model.tokenizer.eos_token_id)  # (1, action_dim): only the new tokens
    return model.action_stats[UNNORM_KEY].unnormalize(head.codec.decode(out[:, -head.action_dim:]))[0]


def check_matches_reference(model: VisionLanguageModel, image: np.ndarray, benchmark: str) -> np.ndarray:
    """vlx's action for `image`, after checking it equals the OpenVLA-style reference's (a BenchmarkError if not)."""
    ours = model.predict_action(image, INSTRUCTION, UNNORM_KEY)
    theirs = reference_predict_action(model, image, INSTRUCTION)
    if not np.array_equal(ours, theirs):
        raise BenchmarkError(f"{benchmark}: vlx returned {ours.tolist()} but the OpenVLA-style reference "
                             f"{theirs.tolist()} for the same image, instruction and weights")
    return ours


def prompt_embeddings(model: VisionLanguageModel, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt's embeddings with the visual tokens spliced in (1, L, D) and its attention mask (1, L)."""
    device = next(model.parameters()).device
    ids = model.prompt_ids(vla_question(INSTRUCTION), has_image=True)[None].to(device)  # (1, L)
    pixels = model.vision.image_transform(as_rgb_image(image))[None].to(device)  # (1, C, S, S)
    with torch.no_grad():
        return model.embed(ids, pixels), torch.ones_like(ids)


def decode_with_vlx(model: VisionLanguageModel, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """vlx's constrained KV-cached loop from the prompt embeddings: action ids (1, action_dim)."""
    codec = model.action_head.codec
    return decode_action_tokens(model.llm.model, embeds, mask, codec.first_id, codec.top_id, model.action_dim)


@torch.no_grad()
def visual_tokens(model: VisionLanguageModel, image: np.ndarray) -> torch.Tensor:
    """The image transform, the vision towers and the projector: the same work on both sides, (1, N, D)."""
    pixels = model.vision.image_transform(as_rgb_image(image))[None].to(next(model.parameters()).device)
    return model.projector(model.vision(pixels))


@torch.no_grad()
def prefill(model: VisionLanguageModel, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One LLM pass over the whole prompt (the first step of both decoders): last-position logits (1, 1, V)."""
    return model.llm.model(inputs_embeds=embeds, attention_mask=mask, use_cache=True, logits_to_keep=1).logits


@torch.no_grad()
def decode_with_generate(model: VisionLanguageModel, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """transformers' greedy `generate()` from the same embeddings: the new ids (1, action_dim)."""
    return model.llm.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=model.action_dim,
                                    do_sample=False, pad_token_id=model.tokenizer.pad_token_id,
                                    eos_token_id=model.tokenizer.eos_token_id)


def run(size: str = "small", warmup: int = 3, repeats: int = 20, threads: int | None = None,
        device: str = "cpu") -> BenchResult:
    """Median seconds per call of each side (interleaved); ratio = reference / vlx."""
    threads = set_threads(threads)
    with tempfile.TemporaryDirectory(prefix="vlx-bench-") as tmp:
        model = bench_vla(size, Path(tmp)).to(device)
    image = np.random.default_rng(1).integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    ours = check_matches_reference(model, image, "predict-action")
    embeds, mask = prompt_embeddings(model, image)
    rounds = interleave({
        "vlx predict_action": lambda: model.predict_action(image, INSTRUCTION, UNNORM_KEY),
        "reference generate()": lambda: reference_predict_action(model, image, INSTRUCTION),
        "decode only: vlx loop": lambda: decode_with_vlx(model, embeds, mask),
        "decode only: generate()": lambda: decode_with_generate(model, embeds, mask),
        "shared part: vision + projector": lambda: visual_tokens(model, image),
        "shared part: LLM prefill": lambda: prefill(model, embeds, mask),
    }, warmup, repeats)
    times = medians(rounds)
    decode_ratio = times["decode only: generate()"] / times["decode only: vlx loop"]
    shared = times["shared part: vision + projector"] + times["shared part: LLM prefill"]
    vlx_time, reference_time = times["vlx predict_action"], times["reference generate()"]
    return BenchResult(
        name="predict-action", medians=times, rounds=rounds, ratio=reference_time / vlx_time,
        ratio_label="reference / vlx time per call: vlx is this many times faster", target="≥ 3.0", per="call",
        rows=[("model", f"{size} OpenVLA-family VLA, {sum(p.numel() for p in model.parameters()):,} parameters, "
                        f"{model.vision.num_patches} patches, {model.action_dim}-D actions"),
              ("threads", str(threads)),
              ("actions (identical on both sides)", np.array2string(ours, precision=4)),
              ("calls per second", f"vlx {1 / vlx_time:.1f} Hz, reference {1 / reference_time:.1f} Hz"),
              ("decode only (prefill + action_dim tokens from the same prompt embeddings)",
               f"generate() / vlx loop = {decode_ratio:.3f}"),
              ("shared work (vision + projector + prefill) / reference call",
               f"{shared / reference_time:.1%} — the most vlx could save is the rest, "
               f"{reference_time / shared:.2f}× at best")],
    )
