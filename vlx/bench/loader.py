"""`vlx bench loader`: vlx's robomimic loader against robomimic's `SequenceDataset` on the same file.

Input: a `block-reach` robomimic HDF5 file written by `vlx.envs.record.record_demos` (64 px frames,
lzf-compressed, `next_obs` included). Both sides produce the same training samples — the VLA prompt
ids, the action tokens, the labels, the backbone's pixels, the normalised action — through the same
transforms (the model's image transform, its action statistics and codec), batched by the same
`Collator` in a PyTorch `DataLoader`; only the reading differs: vlx's `robomimic-hdf5` dataset
(`RobotDemonstrations` over `RobomimicFile`) vs robomimic 0.3.0's `SequenceDataset` (`seq_length=1`,
which returns the raw uint8 frame). Two pairs are timed, interleaved: frames read from the file per sample
(vlx's default; robomimic `hdf5_cache_mode="low_dim"`) and frames cached in memory (vlx
`cache_images=True`; robomimic `"all"`). Items that differ raise a `BenchmarkError`. The ratio is vlx
samples/s over robomimic samples/s, the smaller of the two pairs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import h5py
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vlx.bench.models import build, vla_config, write_tokenizer
from vlx.bench.timing import BenchmarkError, BenchResult, interleave, medians, set_threads
from vlx.data.collate import Collator
from vlx.llm.prompts import IGNORE_INDEX, IMAGE_MARKER, question_ids
from vlx.model import VisionLanguageModel
from vlx.training.datamodule import build_dataset

DEMOS = {"tiny": 6, "small": 300}
CAMERA = "agentview_image"
KEY = "block-reach"
BATCH = 32


class RobomimicSamples(Dataset):
    """robomimic's SequenceDataset items turned into vlx training samples with vlx's transforms."""

    def __init__(self, path: Path, model: VisionLanguageModel, cache_mode: str | None) -> None:
        from robomimic.utils import obs_utils
        from robomimic.utils.dataset import SequenceDataset

        obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"rgb": [CAMERA], "low_dim": []}})
        self.sequences = SequenceDataset(str(path), obs_keys=(CAMERA,), dataset_keys=("actions",), frame_stack=1,
                                         seq_length=1, hdf5_cache_mode=cache_mode, filter_by_attribute="train",
                                         load_next_obs=False, hdf5_use_swmr=False)
        with h5py.File(path, "r") as file:  # robomimic reads no language: the instruction of each demo
            self.instructions = {demo: json.loads(file[f"data/{demo}"].attrs["ep_meta"])["lang"]
                                 for demo in self.sequences.demos}
        self.model, self.stats = model, model.action_stats[KEY]
        self.codec = model.action_head.codec
        self.image_token_id = int(model.tokenizer.convert_tokens_to_ids(IMAGE_MARKER))
        self.prompts: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.sequences)

    def locate(self, index: int) -> tuple[str, int]:
        demo = self.sequences._index_to_demo_id[index]
        return demo, index - self.sequences._demo_id_to_start_indices[demo]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.sequences[index]
        demo, step = self.locate(index)
        image = Image.fromarray(item["obs"][CAMERA][0])  # (H, W, 3) uint8: robomimic 0.3.0 returns raw frames
        instruction = self.instructions[demo]
        if instruction not in self.prompts:
            self.prompts[instruction] = question_ids(self.model.prompt_format,
                                                     self.model.action_head.question(instruction),
                                                     self.model.tokenizer, self.image_token_id,
                                                     self.model.vision.num_patches)
        prompt = self.prompts[instruction]
        normalized = self.stats.normalize(item["actions"][0])  # (A,)
        action_ids = self.codec.encode(normalized).tolist()
        eos = self.model.tokenizer.eos_token_id
        return {
            "id": f"{KEY}:{demo}:{step}",
            "input_ids": torch.tensor(prompt + action_ids + [eos]),
            "labels": torch.tensor([IGNORE_INDEX] * len(prompt) + action_ids + [eos]),
            "pixel_values": self.model.vision.image_transform(image),
            "actions": torch.as_tensor(normalized, dtype=torch.float32)[None],  # (1, A): a chunk of one step
            "action_mask": torch.ones(1, dtype=torch.bool),
        }


def vlx_samples(path: Path, model: VisionLanguageModel, cache_images: bool) -> Dataset:
    """vlx's robomimic-hdf5 training set of the file's `train` demos (statistics stored in `model`)."""
    node = {"name": "robomimic-hdf5", "datasets": [{"key": KEY, "path": str(path), "filter_key": "train"}],
            "cache_images": cache_images}
    return build_dataset(node, "bench.data", model, training=True)


def check_same(ours: Dataset, theirs: RobomimicSamples, count: int) -> None:
    """The first `count` vlx items equal robomimic's items of the same (demo, step), tensor for tensor."""
    if len(ours) != len(theirs):
        raise BenchmarkError(f"loader: vlx has {len(ours)} samples, robomimic's SequenceDataset {len(theirs)}")
    where = {theirs.locate(i): i for i in range(len(theirs))}
    for index in range(min(count, len(ours))):
        mine = ours[index]
        _, demo, step = mine["id"].split(":")
        other = theirs[where[(demo, int(step))]]
        for key in ("input_ids", "labels", "pixel_values", "actions", "action_mask"):
            if not torch.equal(mine[key], other[key]):
                raise BenchmarkError(f"loader: sample {mine['id']}: {key} differs between vlx and robomimic")


def one_pass(loader: DataLoader) -> int:
    """Iterate the loader once; returns the number of samples seen."""
    return sum(len(batch["ids"]) for batch in loader)


def run(size: str = "small", warmup: int = 1, repeats: int = 5, threads: int | None = None,
        workers: int = 0) -> BenchResult:
    """Median seconds per pass over the file's train split for each reader; ratio = vlx / robomimic samples/s."""
    from vlx.envs.record import record_demos

    threads = set_threads(threads)
    with tempfile.TemporaryDirectory(prefix="vlx-bench-") as tmp:
        root = Path(tmp)
        path = record_demos(root / "demos.hdf5", DEMOS[size], seed=0).path
        model = build(vla_config("tiny", write_tokenizer(root / "tokenizer"), action_dim=3))
        contenders = {  # name → dataset; vlx first, so its statistics are in the model before robomimic's items
            "vlx (read per sample)": vlx_samples(path, model, cache_images=False),
            "robomimic low_dim": RobomimicSamples(path, model, cache_mode="low_dim"),
            "vlx (cache_images)": vlx_samples(path, model, cache_images=True),
            "robomimic all": RobomimicSamples(path, model, cache_mode="all"),
        }
        check_same(contenders["vlx (read per sample)"], contenders["robomimic low_dim"], count=64)
        check_same(contenders["vlx (cache_images)"], contenders["robomimic all"], count=64)
        collate = Collator(model.tokenizer.pad_token_id)
        loaders = {name: DataLoader(dataset, batch_size=BATCH, shuffle=False, collate_fn=collate, num_workers=workers,
                                    pin_memory=torch.cuda.is_available()) for name, dataset in contenders.items()}
        samples = len(contenders["vlx (read per sample)"])
        rounds = interleave({name: (lambda loader=loader: one_pass(loader)) for name, loader in loaders.items()},
                            warmup, repeats)
    times = medians(rounds)
    rate = {name: samples / seconds for name, seconds in times.items()}
    pairs = {"read per sample": rate["vlx (read per sample)"] / rate["robomimic low_dim"],
             "cached": rate["vlx (cache_images)"] / rate["robomimic all"]}
    return BenchResult(
        name="loader", medians=times, rounds=rounds, ratio=min(pairs.values()),
        ratio_label="vlx / robomimic samples per second, the lower of the two pairs", target="≥ 1.0",
        per=f"pass of {samples} samples",
        rows=[("file", f"block-reach, {DEMOS[size]} demos, train split {samples} samples, 64 px frames (lzf)"),
              ("threads / DataLoader workers / batch", f"{threads} / {workers} / {BATCH}"),
              *((f"samples/s {name}", f"{value:.0f}") for name, value in rate.items()),
              *((f"ratio {name}", f"{value:.3f}") for name, value in pairs.items()),
              ("items checked equal", "first 64 samples of each pair (ids, labels, pixels, actions)")],
    )
