"""CLIP vision tower through transformers' `CLIPVisionModel` (LLaVA's vision backbone).

Loads a local directory or hub id with `from_pretrained`, or builds the architecture from a config
dict (used on the `meta` device and when rebuilding from a checkpoint). Features come from
`hidden_states[feature_layer]` (default -2, the second-to-last layer, as LLaVA) with the CLS token
dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from vlx.errors import ConfigError
from vlx.hub import SAFE_LOADING, check_architecture, load_pretrained
from vlx.registry import VISION_BACKBONES
from vlx.vision.base import VisionBackbone
from vlx.vision.transforms import ImageTransform, build_image_transform

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CHECKED_FIELDS = ("hidden_size", "num_hidden_layers", "image_size", "patch_size")


@VISION_BACKBONES.register("hf-clip")
class HFCLIPVision(VisionBackbone):
    """`CLIPVisionModel` from `source` (local dir or hub id) or from `config` (architecture only)."""

    def __init__(
        self,
        source: str | None = None,
        config: dict[str, Any] | None = None,
        feature_layer: int = -2,
        image_resize: str = "letterbox",
        image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        image_std: Sequence[float] = OPENAI_CLIP_STD,
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        if source is None and config is None:
            raise ConfigError("vision backbone 'hf-clip' needs 'vision.source' (dir or hub id) or 'vision.config'")
        if load_weights and source is not None:
            self.model = load_pretrained(lambda s: CLIPVisionModel.from_pretrained(s, **SAFE_LOADING), source,
                                         "vision.source", "CLIP vision model")
            check_architecture(self.model.config, config or {}, CHECKED_FIELDS, "vision.config")
        else:
            if config is None:
                raise ConfigError("vision.config is required to build 'hf-clip' without loading weights")
            self.model = CLIPVisionModel(CLIPVisionConfig(**config))
        cfg = self.model.config
        layers = cfg.num_hidden_layers
        if not -layers - 1 <= feature_layer <= layers:
            raise ConfigError(f"vision.feature_layer={feature_layer} is outside the {layers}+1 hidden states")
        self.feature_layer = feature_layer
        self.embed_dim = cfg.hidden_size
        self.image_size = cfg.image_size
        self.num_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.image_resize, self.image_mean, self.image_std = image_resize, tuple(image_mean), tuple(image_std)
        self._transform = build_image_transform(image_resize, cfg.image_size, self.image_mean, self.image_std)

    @property
    def image_transform(self) -> ImageTransform:
        return self._transform

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.model.embeddings.patch_embedding.weight.dtype
        out = self.model(pixel_values.to(dtype), output_hidden_states=True)
        return out.hidden_states[self.feature_layer][:, 1:]  # (B, N, Dv), CLS dropped

    def spec(self) -> dict[str, Any]:
        return {
            "name": "hf-clip",
            "source": None,
            "config": self.model.config.to_dict(),
            "feature_layer": self.feature_layer,
            "image_resize": self.image_resize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }
