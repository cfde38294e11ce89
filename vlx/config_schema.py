"""The typed shape of vlx's own config nodes: every stage in `stages`, and `train`, `eval`, `rollout`,
`checkpointing`, `compile`, `augment`, `observation`.

The dataclasses below name each node's keys and their types; the values themselves (the defaults) stay in
the YAML files (`conf/config.yaml`, `conf/stage/*.yaml`), so each fact has one source. `check_config`
runs on every composed config (`vlx.config.compose` and the `vlx train|eval|info` apps): a misspelled
key — from the command line, with or without `+`, or in a recipe file — is a one-line ConfigError naming
the key and the closest valid one, and a value of the wrong type names the key, the value and the type
expected. Nodes that registries fill (vision, llm, head, data, prompt, ...) are checked by their
factories' signatures instead (`vlx.registry.check_arguments`).
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, fields
from typing import Any, Optional, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from vlx.errors import ConfigError

Node = Union[dict, None]  # a mapping whose own keys a registry or a dataset factory checks


@dataclass
class LoraSchema:
    r: int
    alpha: float
    dropout: float
    target_modules: Union[str, list]


@dataclass
class StageSchema:
    trainable: list
    init_from: Optional[str]
    reinit_projector: bool
    prompt: Node
    data: Node
    epochs: int
    max_steps: int
    global_batch_size: int
    batch_size: int
    lr: float
    weight_decay: float
    betas: list
    eps: float
    schedule: str
    warmup_ratio: float
    max_grad_norm: Optional[float]
    on_nonfinite: str
    num_workers: int
    val_every_n_epochs: int
    sample_table: int
    lora: Optional[LoraSchema]


@dataclass
class TrainSchema:
    stages: list
    objective: str


@dataclass
class EvalSchema:
    json_path: Optional[str]
    image_dir: Optional[str]
    limit: Optional[int]
    batch_size: int
    blank_control: bool
    demos: Optional[str]
    demos_filter_key: Optional[str]
    demos_limit: Optional[int]


@dataclass
class RolloutSchema:
    env: Optional[str]
    env_kwargs: Node
    episodes: int
    first_seed: int
    batch_size: int
    videos: int
    unnorm_key: Optional[str]
    execute_steps: Optional[int]
    ensemble: Optional[str]
    ensemble_weight: float
    blind_instruction: Optional[str]
    expert: bool
    expert_noise: Optional[float]
    policy: str
    tasks: Union[str, list, None]
    wrong_instruction: bool


@dataclass
class CheckpointingSchema:
    every_n_steps: int
    keep: int


@dataclass
class CompileSchema:
    parts: list
    backend: str
    mode: Optional[str]


@dataclass
class AugmentSchema:
    crop_scale: Optional[float]
    color_jitter: bool


@dataclass
class ObservationSchema:
    cameras: Optional[list]
    state_keys: Optional[list]


TOP_LEVEL = {"train": (TrainSchema, "train"), "eval": (EvalSchema, "eval"), "rollout": (RolloutSchema, "rollout"),
             "checkpointing": (CheckpointingSchema, "checkpointing"), "compile": (CompileSchema, "compile"),
             "augment": (AugmentSchema, "augment"), "observation": (ObservationSchema, "observation")}


def closest(key: str, valid: list[str]) -> str:
    """`; did you mean 'lr'?` for a misspelled key, or an empty string when nothing is close."""
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def unknown_key_error(full_key: str, valid: list[str], what: str) -> ConfigError:
    """The one-line error for a key that `what` does not have."""
    key = full_key.rsplit(".", 1)[-1]
    return ConfigError(f"config key '{full_key}' is not a {what} setting{closest(key, valid)} "
                       f"(valid: {', '.join(sorted(valid))})", kind="unknown-key")


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether a resolved config value fits a schema annotation (ints are floats; a bool is not an int)."""
    if annotation is Any:
        return True
    if typing.get_origin(annotation) is Union:
        return any(_accepts(option, value) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is list:
        return isinstance(value, (list, tuple, ListConfig))
    if annotation is dict:
        return isinstance(value, (dict, DictConfig))
    if isinstance(annotation, type) and hasattr(annotation, "__dataclass_fields__"):
        return isinstance(value, (dict, DictConfig))
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Union:
        return " or ".join(_type_name(option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and hasattr(annotation, "__dataclass_fields__"):
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def check_node(node: Any, schema: type, where: str, what: str) -> None:
    """Every key of `node` is a field of `schema` and has its type; nested schemas are checked too."""
    if node is None:
        return
    if not isinstance(node, (dict, DictConfig)):
        raise ConfigError(f"config key '{where}' must be a mapping of {what} settings, got {node!r}")
    hints = typing.get_type_hints(schema)
    valid = [field.name for field in fields(schema)]
    for key in node:
        if key not in hints:
            raise unknown_key_error(f"{where}.{key}", valid, what)
        if isinstance(node, DictConfig):
            if OmegaConf.is_missing(node, key):
                continue  # `???`: reported where it is used ("must be set")
            try:
                value = node[key]
            except Exception:  # an interpolation that does not resolve: reported where it is used
                continue
        else:
            value = node[key]
        annotation = hints[key]
        if not _accepts(annotation, value):
            raise ConfigError(f"config key '{where}.{key}'={value!r}: expected {_type_name(annotation)}",
                              kind="wrong-type")
        nested = next((a for a in typing.get_args(annotation) or (annotation,)
                       if isinstance(a, type) and hasattr(a, "__dataclass_fields__")), None)
        if nested is not None and value is not None:
            check_node(value, nested, f"{where}.{key}", f"{where}.{key}")


def check_config(cfg: DictConfig) -> None:
    """Check the stage nodes and vlx's top-level nodes of a composed config (see the module docstring)."""
    for name, (schema, what) in TOP_LEVEL.items():
        if name in cfg:
            check_node(cfg[name], schema, name, what)
    for stage, node in (cfg.get("stages") or {}).items():
        check_node(node, StageSchema, f"stages.{stage}", "stage")
