"""The vision-language model: vision backbone → projector → LLM → head, composed from registry parts.

Projected patch tokens replace the image-slot positions of the LLM's input embeddings with one
`masked_scatter` (no per-sample Python loop), so any placement of the slot — at LLaVA's `<image>`
marker or right after BOS — works the same. `forward(batch)` returns the head's loss, logits and
metrics; `generate` answers questions about images with transformers' KV-cached generation; a model with the
action-token head (a VLA) also has `predict_action(image, instruction, unnorm_key)`, which decodes
`action_dim` action tokens (constrained, KV-cached) and un-normalises them with the action statistics
of the dataset `unnorm_key` names.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from vlx.data.action_stats import ActionStats, select_stats
from vlx.data.augment import inference_preprocess
from vlx.data.collate import Collator
from vlx.errors import ConfigError, DataError
from vlx.heads.action import ActionTokenHead, vla_question
from vlx.heads.action_decoding import decode_action_tokens
from vlx.heads.text import HeadOutput
from vlx.llm.prompts import PromptFormat, question_ids
from vlx.vision.transforms import as_rgb_image

PARTS = ("vision", "projector", "llm", "head")


class VisionLanguageModel(nn.Module):
    """A VLM; `config` is the resolved vlx config it was built from (saved with checkpoints)."""

    def __init__(
        self, vision: nn.Module, projector: nn.Module, llm: nn.Module, head: nn.Module,
        prompt_format: PromptFormat, config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.vision, self.projector, self.llm, self.head = vision, projector, llm, head
        self.prompt_format = prompt_format
        self.config = config or {}
        self.action_stats: dict[str, ActionStats] = {}  # dataset name → statistics (VLAs; saved in checkpoints)

    @property
    def tokenizer(self) -> Any:
        return self.llm.tokenizer

    def train(self, mode: bool = True) -> VisionLanguageModel:
        """Like nn.Module.train, but parts with no trainable parameter stay in eval mode (frozen)."""
        super().train(mode)
        for name in PARTS:
            params = list(getattr(self, name).parameters())
            if params and not any(p.requires_grad for p in params):
                getattr(self, name).eval()
        return self

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with visual tokens spliced in at the image-slot positions: (B, L, D)."""
        embeds = self.llm.embed(input_ids)  # (B, L, D)
        slots = input_ids == self.llm.image_token_id  # (B, L)
        n_slots = int(slots.sum())
        if pixel_values is None:
            if n_slots:
                raise DataError(f"the batch has {n_slots} image-slot tokens but no pixel_values")
            return embeds
        visual = self.projector(self.vision(pixel_values)).to(embeds.dtype)  # (M, N, D)
        if n_slots != visual.shape[0] * visual.shape[1]:
            raise DataError(
                f"the batch has {n_slots} image-slot tokens but {visual.shape[0]} images × "
                f"{visual.shape[1]} visual tokens"
            )
        return embeds.masked_scatter(slots.unsqueeze(-1), visual)  # (B, L, D)

    def forward(self, batch: dict[str, Any]) -> HeadOutput:
        embeds = self.embed(batch["input_ids"], batch.get("pixel_values"))
        logits = self.llm(embeds, batch["attention_mask"])  # (B, L, V)
        return self.head(logits, batch["labels"], batch.get("ids"))

    def prompt_ids(self, question: str, has_image: bool) -> torch.Tensor:
        """Token ids of a single-turn prompt ready for generation, with the image slot expanded."""
        image_id = self.llm.image_token_id if has_image else None
        return torch.tensor(question_ids(self.prompt_format, question, self.tokenizer, image_id, self.vision.num_patches))

    @torch.no_grad()
    def generate(
        self, images: list[Image.Image | None], questions: list[str], max_new_tokens: int = 32, **generate_kwargs: Any
    ) -> list[str]:
        """Answer each question about its image (None: text only); greedy unless kwargs say otherwise."""
        device = next(self.parameters()).device
        items = [
            {
                "id": str(i),
                "input_ids": self.prompt_ids(question, image is not None),
                "pixel_values": None if image is None else self.vision.image_transform(image),
            }
            for i, (image, question) in enumerate(zip(images, questions, strict=True))
        ]
        batch = Collator(self.tokenizer.pad_token_id, padding_side="left")(items)
        pixels = None if batch["pixel_values"] is None else batch["pixel_values"].to(device)
        embeds = self.embed(batch["input_ids"].to(device), pixels)
        generate_kwargs.setdefault("do_sample", False)
        output = self.llm.model.generate(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"].to(device), max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id, **generate_kwargs,
        )  # (B, T): only the new tokens when generating from inputs_embeds
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    @property
    def action_head(self) -> ActionTokenHead:
        """The action-token head; a ConfigError for models with another head."""
        if not isinstance(self.head, ActionTokenHead):
            raise ConfigError(f"this model's head is {self.config.get('head', {}).get('name', type(self.head).__name__)!r}, "
                              "not an action head: it answers with text, not actions")
        return self.head

    @property
    def action_dim(self) -> int:
        return self.action_head.action_dim

    @property
    def unnorm_keys(self) -> list[str]:
        """Names of the datasets whose action statistics the model carries (choices for `unnorm_key`)."""
        return sorted(self.action_stats)

    @torch.no_grad()
    def predict_actions(
        self, images: list[Image.Image | np.ndarray], instructions: list[str], unnorm_key: str | None = None
    ) -> np.ndarray:
        """Actions (B, action_dim) in the robot's units for each (image, instruction), greedy and constrained."""
        head = self.action_head
        stats = select_stats(self.action_stats, unnorm_key)
        preprocess = inference_preprocess(self.config.get("augment"))
        device = next(self.parameters()).device
        items = [
            {
                "id": str(i),
                "input_ids": self.prompt_ids(vla_question(instruction), has_image=True),
                "pixel_values": self.vision.image_transform(preprocess(as_rgb_image(image))),
            }
            for i, (image, instruction) in enumerate(zip(images, instructions, strict=True))
        ]
        batch = Collator(self.tokenizer.pad_token_id, padding_side="left")(items)
        embeds = self.embed(batch["input_ids"].to(device), batch["pixel_values"].to(device))  # (B, L, D)
        codec = head.tokenizer
        ids = decode_action_tokens(
            self.llm.model, embeds, batch["attention_mask"].to(device), codec.first_id, codec.top_id, head.action_dim
        )  # (B, A)
        return stats.unnormalize(codec.decode(ids))  # (B, A)

    def predict_action(self, image: Image.Image | np.ndarray, instruction: str, unnorm_key: str | None = None) -> np.ndarray:
        """One action (action_dim,) in the robot's units: OpenVLA's `predict_action`."""
        return self.predict_actions([image], [instruction], unnorm_key)[0]

    def parameter_counts(self) -> dict[str, int]:
        """Total, trainable and frozen parameter counts, overall and per part."""
        counts: dict[str, int] = {}
        for name in PARTS:
            params = list(getattr(self, name).parameters())
            counts[f"{name}_total"] = sum(p.numel() for p in params)
            counts[f"{name}_trainable"] = sum(p.numel() for p in params if p.requires_grad)
        counts["total"] = sum(counts[f"{n}_total"] for n in PARTS)
        counts["trainable"] = sum(counts[f"{n}_trainable"] for n in PARTS)
        counts["frozen"] = counts["total"] - counts["trainable"]
        return counts
