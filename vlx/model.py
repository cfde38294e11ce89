"""The vision-language model: vision backbone → projector → LLM → head, composed from registry parts.

Projected patch tokens replace the image-slot positions of the LLM's input embeddings with one
`masked_scatter` (no per-sample Python loop), so any placement of the slot — at LLaVA's `<image>`
marker or right after BOS — works the same. `forward(batch)` returns the head's loss, logits and
metrics; `generate` answers questions about images with transformers' KV-cached generation.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch import nn

from vlx.data.collate import Collator
from vlx.errors import DataError
from vlx.heads.text import HeadOutput
from vlx.llm.prompts import IMAGE_MARKER, PromptFormat, Turn, expand_image_slot

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

    @property
    def tokenizer(self) -> Any:
        return self.llm.tokenizer

    def train(self, mode: bool = True) -> VisionLanguageModel:
        """Like nn.Module.train, but parts with no trainable parameter stay in eval mode (frozen)."""
        super().train(mode)
        for name in PARTS:
            part = getattr(self, name)
            if not any(p.requires_grad for p in part.parameters()):
                part.eval()
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
        if has_image and IMAGE_MARKER not in question:
            question = f"{IMAGE_MARKER}\n{question}"
        ids = self.prompt_format.generation_ids([Turn("user", question)], self.tokenizer, has_image)
        ids, _ = expand_image_slot(ids, ids, self.llm.image_token_id, self.vision.num_patches)
        return torch.tensor(ids)

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
