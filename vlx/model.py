"""The vision-language model: vision backbone → projector → LLM → head, composed from registry parts.

Projected patch tokens replace the image-slot positions of the LLM's input embeddings with one
`masked_scatter` (no per-sample Python loop), so any placement of the slot — at LLaVA's `<image>`
marker or right after BOS — works the same. A VLA may see several cameras and the robot's state: all
cameras of a batch go through the (shared) vision backbone and projector in one call, their patch tokens
fill the slot in camera order, and the normalised state, through the `proprio` projector, takes one more
slot position after the patches. `forward(batch)` returns the head's loss, logits and metrics; `generate`
answers questions about images with transformers' KV-cached generation; a VLA (a model with an action
head) also has `predict_action(image_or_cameras, instruction, unnorm_key, state)`, which decodes a chunk
through its head and un-normalises it with the action statistics of the dataset `unnorm_key` names (the
state is normalised with that dataset's state statistics).
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
from vlx.heads.base import ActionHead, HeadOutput
from vlx.llm.prompts import PromptFormat, question_ids
from vlx.observation import ObservationSpec
from vlx.vision.transforms import as_rgb_image

PARTS = ("vision", "projector", "proprio", "llm", "head")


class VisionLanguageModel(nn.Module):
    """A VLM; `config` is the resolved vlx config it was built from (saved with checkpoints)."""

    def __init__(
        self, vision: nn.Module, projector: nn.Module, llm: nn.Module, head: nn.Module,
        prompt_format: PromptFormat, config: dict[str, Any] | None = None, proprio: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.vision, self.projector, self.proprio, self.llm, self.head = vision, projector, proprio, llm, head
        self.prompt_format = prompt_format
        self.config = config or {}
        self.observation = ObservationSpec.from_config(self.config)
        self.action_stats: dict[str, ActionStats] = {}  # dataset name → statistics (VLAs; saved in checkpoints)
        self.state_stats: dict[str, ActionStats] = {}  # dataset name → state statistics (models with a state input)

    @property
    def tokenizer(self) -> Any:
        return self.llm.tokenizer

    def parts(self) -> dict[str, nn.Module]:
        """The model's parts by name (PARTS order); a model without state input has no `proprio` part."""
        return {name: getattr(self, name) for name in PARTS if getattr(self, name) is not None}

    def train(self, mode: bool = True) -> VisionLanguageModel:
        """Like nn.Module.train, but parts with no trainable parameter stay in eval mode (frozen)."""
        super().train(mode)
        for part in self.parts().values():
            params = list(part.parameters())
            if params and not any(p.requires_grad for p in params):
                part.eval()
        return self

    @property
    def observation_tokens(self) -> int:
        """Image-slot positions of one robot observation: the patches of every camera, then the state token."""
        return self.observation.num_tokens(self.vision.num_patches)

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None,
              state: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with visual (and state) tokens spliced in at the image-slot positions: (B, L, D).

        `pixel_values` is (M, 3k, H, W) for one image per sample or (M, C, 3k, H, W) for C cameras; `state`
        (M, P) normalised states of the same M samples.
        """
        embeds = self.llm.embed(input_ids)  # (B, L, D)
        slots = input_ids == self.llm.image_token_id  # (B, L)
        n_slots = int(slots.sum())
        if pixel_values is None:
            if n_slots or state is not None:
                raise DataError(f"the batch has {n_slots} image-slot tokens"
                                f"{' and states' if state is not None else ''} but no pixel_values")
            return embeds
        samples = pixel_values.shape[0]
        pixels = pixel_values.flatten(0, 1) if pixel_values.dim() == 5 else pixel_values  # (M·C, 3k, H, W)
        visual = self.projector(self.vision(pixels)).to(embeds.dtype)  # (M·C, N, D)
        visual = visual.reshape(samples, -1, visual.shape[-1])  # (M, C·N, D): cameras in order
        if state is not None:
            if self.proprio is None:
                raise DataError("the batch has states but the model has no state input (no proprio projector)")
            token = self.proprio(state.to(visual.dtype)).to(embeds.dtype)  # (M, D)
            visual = torch.cat([visual, token[:, None]], dim=1)  # (M, C·N + 1, D)
        if n_slots != visual.shape[0] * visual.shape[1]:
            what = (("images", "visual") if pixel_values.dim() == 4 and state is None
                    else ("observations", "visual/state"))
            raise DataError(f"the batch has {n_slots} image-slot tokens but {samples} {what[0]} × {visual.shape[1]} "
                            f"{what[1]} tokens")
        return embeds.masked_scatter(slots.unsqueeze(-1), visual)  # (B, L, D)

    def forward(self, batch: dict[str, Any]) -> HeadOutput:
        embeds = self.embed(batch["input_ids"], batch.get("pixel_values"), batch.get("state"))  # (B, L, D)
        return self.head(self.llm, embeds, batch)

    def prompt_ids(self, question: str, has_image: bool) -> torch.Tensor:
        """Token ids of a single-turn prompt ready for generation, with the image slot expanded."""
        image_id = self.llm.image_token_id if has_image else None
        return torch.tensor(question_ids(self.prompt_format, question, self.tokenizer, image_id,
                                         self.vision.num_patches))

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
    def action_head(self) -> ActionHead:
        """The action head; a ConfigError for models with another head."""
        if not isinstance(self.head, ActionHead):
            raise ConfigError(f"this model's head is "
                              f"{self.config.get('head', {}).get('name', type(self.head).__name__)!r}, "
                              "not an action head: it answers with text, not actions")
        return self.head

    @property
    def is_vla(self) -> bool:
        """Whether the model acts (has an action head)."""
        return isinstance(self.head, ActionHead)

    @property
    def action_dim(self) -> int:
        return self.action_head.action_dim

    @property
    def chunk_size(self) -> int:
        """Actions per prediction (K); 1 for OpenVLA-style models."""
        return self.action_head.chunk_size

    @property
    def unnorm_keys(self) -> list[str]:
        """Names of the datasets whose action statistics the model carries (choices for `unnorm_key`)."""
        return sorted(self.action_stats)

    def observation_item(self, index: int, images: Any, instruction: str, state: Any, unnorm_key: str | None,
                         preprocess: Any, field: str = "state") -> dict[str, Any]:
        """One inference sample: the prompt with its observation slot and the head's suffix, pixels, state."""
        head = self.action_head
        frames = [self.vision.image_transform(preprocess(as_rgb_image(image)))
                  for image in self.observation.images(images)]  # C × (3k, H, W)
        checked = self.observation.state(state, field)
        suffix = head.sequence()
        prompt = question_ids(self.prompt_format, head.question(instruction), self.tokenizer, self.llm.image_token_id,
                              self.observation_tokens)
        item = {"id": str(index), "input_ids": torch.tensor(prompt + suffix.input_ids),
                "pixel_values": torch.stack(frames) if self.observation.cameras else frames[0]}
        if head.one_pass:
            item["action_slots"] = torch.tensor([False] * len(prompt) + suffix.slots)
        if checked is not None:
            normalized = select_stats(self.state_stats, unnorm_key, "state").normalize(checked)  # (P,)
            item["state"] = torch.as_tensor(normalized, dtype=torch.float32)
        return item

    @torch.no_grad()
    def predict_actions(
        self, images: list[Any], instructions: list[str], unnorm_key: str | None = None, states: list[Any] | None = None
    ) -> np.ndarray:
        """Actions in the robot's units for each observation: (B, A) when the head predicts one step, else
        (B, K, A). Each entry of `images` is one image or, for a model with several cameras, `{camera: image}`;
        `states` the robot states of a model with a state input."""
        head = self.action_head
        stats = select_stats(self.action_stats, unnorm_key)
        preprocess = inference_preprocess(self.config.get("augment"))
        device = next(self.parameters()).device
        states = [None] * len(images) if states is None else states
        items = [self.observation_item(i, image, instruction, state, unnorm_key, preprocess,
                                       "state" if len(images) == 1 else f"states[{i}]")
                 for i, (image, instruction, state) in enumerate(zip(images, instructions, states, strict=True))]
        batch = Collator(self.tokenizer.pad_token_id, padding_side="left")(items)
        batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
        embeds = self.embed(batch["input_ids"], batch["pixel_values"], batch.get("state"))  # (B, L, D)
        chunk = stats.unnormalize(head.decode(self.llm, embeds, batch).float().cpu().numpy())  # (B, K, A)
        return chunk[:, 0] if head.chunk_size == 1 else chunk

    def predict_action(self, image: Any, instruction: str, unnorm_key: str | None = None,
                       state: Any = None) -> np.ndarray:
        """One prediction in the robot's units: (action_dim,) as OpenVLA's `predict_action`, or a chunk
        (K, action_dim) for a head with `chunk_size` K > 1."""
        return self.predict_actions([image], [instruction], unnorm_key, None if state is None else [state])[0]

    def parameter_counts(self) -> dict[str, int]:
        """Total, trainable and frozen parameter counts, overall and per part."""
        counts: dict[str, int] = {}
        parts = self.parts()
        for name in PARTS:
            params = list(parts[name].parameters()) if name in parts else []
            counts[f"{name}_total"] = sum(p.numel() for p in params)
            counts[f"{name}_trainable"] = sum(p.numel() for p in params if p.requires_grad)
        counts["total"] = sum(counts[f"{n}_total"] for n in PARTS)
        counts["trainable"] = sum(counts[f"{n}_trainable"] for n in PARTS)
        counts["frozen"] = counts["total"] - counts["trainable"]
        return counts
