"""Any timm Vision Transformer by id, with Prismatic's feature semantics.

`timm.create_model(model_id, num_classes=0, img_size=image_size, **model_kwargs)`; features from block
`feature_layer` (default -2, the second-to-last) via `get_intermediate_layers`, which drops the prefix
tokens (CLS, registers). Pretrained weights load through timm's own path — the hub, or a local file
given as `weights_file` (timm's `pretrained_cfg_overlay=dict(file=...)`). Normalisation comes from the
model's pretrained config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch

from vlx.errors import ConfigError
from vlx.hub import load_pretrained
from vlx.registry import VISION_BACKBONES
from vlx.vision.base import VisionBackbone
from vlx.vision.transforms import ImageTransform, build_image_transform


@VISION_BACKBONES.register("timm-vit")
class TimmViT(VisionBackbone):
    """A timm ViT; `model_kwargs` override architecture fields (e.g. a tiny `embed_dim`/`depth`)."""

    def __init__(
        self,
        model_id: str,
        image_size: int = 224,
        pretrained: bool = False,
        weights_file: str | None = None,
        feature_layer: int = -2,
        image_resize: str = "resize-naive",
        model_kwargs: dict[str, Any] | None = None,
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        self.model_id, self.model_kwargs = model_id, dict(model_kwargs or {})
        use_weights = pretrained and load_weights
        overlay = None
        if weights_file and use_weights:
            local = Path(weights_file).expanduser()  # timm does not expand "~" (the default VLX_HOME uses it)
            if not local.is_file():
                raise ConfigError(f"vision.weights_file={weights_file!r}: no such file (expected local weights "
                                  f"for timm model {model_id!r}: .safetensors, .pth or .bin)")
            overlay = {"file": str(local)}

        def create(model_name: str) -> torch.nn.Module:
            try:
                return timm.create_model(
                    model_name, pretrained=use_weights, pretrained_cfg_overlay=overlay,
                    num_classes=0, img_size=image_size, **self.model_kwargs,
                )
            except TypeError as exc:  # a non-ViT id or a model_kwargs key the model does not take
                raise ConfigError(f"vision.model_id={model_name!r} with model_kwargs={self.model_kwargs}: {exc} "
                                  "(timm-vit needs a ViT that accepts img_size)") from None

        if not timm.is_model(model_id.split(".")[0]):  # ids may carry a ".tag"
            raise ConfigError(f"vision.model_id={model_id!r} is not a timm model (see timm.list_models())")
        hint = f"download timm/{model_id} where there is network and set vision.weights_file=FILE"
        self.model = (
            load_pretrained(create, model_id, "vision.model_id", "timm model", hint) if use_weights
            else create(model_id)
        )
        depth = len(self.model.blocks)
        self.block_index = feature_layer % depth if -depth <= feature_layer < depth else None
        if self.block_index is None:
            raise ConfigError(f"vision.feature_layer={feature_layer} is outside the model's {depth} blocks")
        self.feature_layer, self.image_size, self.image_resize = feature_layer, image_size, image_resize
        self.embed_dim = self.model.embed_dim
        self.num_patches = self.model.patch_embed.num_patches
        data_cfg = self.model.pretrained_cfg
        self.image_mean, self.image_std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
        self._transform = build_image_transform(image_resize, image_size, self.image_mean, self.image_std)

    @property
    def image_transform(self) -> ImageTransform:
        return self._transform

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.model.patch_embed.proj.weight.dtype
        (features,) = self.model.get_intermediate_layers(pixel_values.to(dtype), n={self.block_index})
        return features  # (B, N, Dv), prefix tokens dropped

    def spec(self) -> dict[str, Any]:
        return {
            "name": "timm-vit",
            "model_id": self.model_id,
            "image_size": self.image_size,
            "pretrained": False,
            "feature_layer": self.feature_layer,
            "image_resize": self.image_resize,
            "model_kwargs": self.model_kwargs,
        }
