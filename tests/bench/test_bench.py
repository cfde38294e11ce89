"""`vlx bench` at tiny size: each benchmark checks that both sides compute the same thing (equal first loss,
identical actions, equal samples), prints its table and ends with the ratio line; the timing is not asserted."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

RATIO_LINE = re.compile(r"^ratio=(\d+\.\d{3}) \((.+); target (.+)\)$")


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    from vlx.cli import main

    main(["bench", *argv])
    return capsys.readouterr().out


def test_train_step_equal_first_loss_and_ratio_line(capsys: pytest.CaptureFixture) -> None:
    out = run_cli(["train-step", "--size", "tiny", "--warmup", "1", "--repeats", "2", "--threads", "1"], capsys)
    ratio = RATIO_LINE.match(last_line(out))
    assert ratio and ratio[2] == "vlx / transformers LLaVA time per step" and ratio[3] == "≤ 1.0"
    assert float(ratio[1]) > 0
    assert "vlx bench train-step" in out and "threads: 1" in out
    first = re.search(r"first-step loss: vlx (\d+\.\d+) = reference (\d+\.\d+)", out)
    assert first and abs(float(first[1]) - float(first[2])) <= 1e-5
    assert float(first[1]) > 1.0  # a random model's cross-entropy, not a zero loss
    drift = re.search(r"max \|loss difference\| over all steps: (\S+)", out)
    assert drift and float(drift[1]) < 1e-4  # the same optimisation on both sides, step after step


def test_train_step_rounds_and_losses() -> None:
    from vlx.bench.train_step import run

    result = run("tiny", warmup=1, repeats=3, threads=1)
    assert set(result.rounds) == {"vlx", "reference"}
    assert [len(times) for times in result.rounds.values()] == [3, 3]
    assert result.ratio == pytest.approx(result.medians["vlx"] / result.medians["reference"])


def test_reference_llava_holds_the_same_weights(tiny_model, tmp_path) -> None:
    from vlx.bench.train_step import reference_model, shapes_batch

    batch = shapes_batch(tiny_model, tmp_path / "shapes", 2)
    hf = reference_model(tiny_model, tmp_path).eval()
    tiny_model.eval()
    with torch.no_grad():
        ours = tiny_model(batch).loss
        theirs = hf(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels")}).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=0)
    assert not any(p.requires_grad for p in hf.model.vision_tower.parameters())


def test_predict_action_identical_actions_and_ratio_line(capsys: pytest.CaptureFixture) -> None:
    out = run_cli(["predict-action", "--size", "tiny", "--warmup", "1", "--repeats", "2", "--threads", "1"], capsys)
    ratio = RATIO_LINE.match(last_line(out))
    assert ratio and ratio[3] == "≥ 3.0" and float(ratio[1]) > 0
    assert "actions (identical on both sides)" in out and "Hz" in out
    decode = re.search(r"generate\(\) / vlx loop = (\d+\.\d{3})", out)
    assert decode and float(decode[1]) > 0
    assert "decode only: vlx loop" in out and "decode only: generate()" in out


def test_reference_predict_action_equals_vlx_on_distinct_actions(tmp_path) -> None:
    from vlx.bench.predict_action import (
        INSTRUCTION,
        UNNORM_KEY,
        bench_vla,
        decode_with_generate,
        decode_with_vlx,
        prompt_embeddings,
        reference_predict_action,
    )

    model = bench_vla("tiny", tmp_path)
    images = [np.random.default_rng(seed).integers(0, 256, size=(40, 40, 3), dtype=np.uint8) for seed in range(3)]
    outputs = [model.predict_action(image, INSTRUCTION, UNNORM_KEY) for image in images]
    for image, ours in zip(images, outputs, strict=True):
        np.testing.assert_array_equal(ours, reference_predict_action(model, image, INSTRUCTION))
    assert outputs[0].shape == (7,)
    assert len({tuple(o) for o in outputs}) == 3  # the images lead to different actions: a non-trivial comparison
    embeds, mask = prompt_embeddings(model, images[0])  # the decode-only contenders choose the same tokens too
    assert decode_with_vlx(model, embeds, mask).tolist() == decode_with_generate(model, embeds, mask).tolist()


def test_predict_action_mismatch_is_an_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlx.bench import predict_action
    from vlx.bench.timing import BenchmarkError

    real = predict_action.reference_predict_action
    monkeypatch.setattr(predict_action, "reference_predict_action", lambda *a: real(*a) + 1.0)  # a wrong reference
    with pytest.raises(BenchmarkError, match=r"predict-action: vlx returned \[.*\] but the OpenVLA-style reference"):
        predict_action.run("tiny", warmup=0, repeats=1, threads=1)


def test_loader_equal_samples_and_ratio_line(capsys: pytest.CaptureFixture) -> None:
    out = run_cli(["loader", "--size", "tiny", "--warmup", "0", "--repeats", "1", "--threads", "1"], capsys)
    ratio = RATIO_LINE.match(last_line(out))
    assert ratio and ratio[3] == "≥ 1.0" and float(ratio[1]) > 0
    rates = dict(re.findall(r"samples/s (.+): (\d+)", out))
    assert set(rates) == {"vlx (read per sample)", "robomimic low_dim", "vlx (cache_images)", "robomimic all"}
    assert "train split 28 samples" in out


def test_loader_items_match_robomimic(tmp_path) -> None:
    from vlx.bench.loader import RobomimicSamples, check_same, vlx_samples
    from vlx.bench.models import build, vla_config, write_tokenizer
    from vlx.bench.timing import BenchmarkError
    from vlx.envs.record import record_demos

    path = record_demos(tmp_path / "demos.hdf5", 3, seed=1).path
    model = build(vla_config("tiny", write_tokenizer(tmp_path / "tok"), action_dim=3))
    ours = vlx_samples(path, model, cache_images=False)
    theirs = RobomimicSamples(path, model, cache_mode="low_dim")
    check_same(ours, theirs, count=len(ours))  # every sample equal, tensor for tensor
    assert len(ours) == len(theirs) > 5
    model.action_stats["block-reach"] = type(model.action_stats["block-reach"]).from_actions(
        np.ones((4, 3), dtype=np.float32) * np.array([1, 2, 3], dtype=np.float32), num_trajectories=1)
    with pytest.raises(BenchmarkError,
                       match=r"loader: sample block-reach:demo_\d+:\d+: (labels|input_ids|actions) differs"):
        check_same(ours, RobomimicSamples(path, model, cache_mode="low_dim"), count=4)


def test_gpu_script_runs_tiny_on_cpu(capsys: pytest.CaptureFixture) -> None:
    out = run_cli(["gpu", "--tiny", "--warmup", "0", "--repeats", "1", "--threads", "1", "--batch-size", "2"], capsys)
    assert RATIO_LINE.match(last_line(out))
    llava = re.search(r"tiny llava-family: .*?(\d+) tokens/s, step (\d+\.\d+) s", out)
    vla = re.search(r"tiny openvla-family: .*? predict_action (\d+\.\d+) Hz \((\d+\.\d+) actions/s\)", out)
    oft = re.search(r"tiny openvla-oft-family: .*? predict_action (\d+\.\d+) Hz \((\d+\.\d+) actions/s\)", out)
    assert (llava and int(llava[1]) > 0 and vla and float(vla[1]) > 0
            and float(vla[2]) == pytest.approx(float(vla[1]), rel=0.01))
    assert oft and float(oft[2]) == pytest.approx(8 * float(oft[1]), rel=0.01)  # chunks of 8 actions per call


def test_gpu_workload_of_a_7b_recipe(tmp_path) -> None:
    from vlx.bench.gpu import recipe_workload, synthetic_batch
    from vlx.bench.models import write_tokenizer

    work = recipe_workload("prism-dinosiglip-224px-7b", write_tokenizer(tmp_path), layers=2, device="meta")
    assert work.name == "prism-dinosiglip-224px-7b (2 LLM layers)" and work.trainable == ["projector", "llm"]
    assert work.model.llm.model.dtype == torch.bfloat16 and work.model.llm.model.config.num_hidden_layers == 2
    batch = synthetic_batch(work.model, 2, "meta")
    assert batch["input_ids"].shape == (2, 1 + 256 + 32) and batch["pixel_values"].shape == (2, 6, 224, 224)


def test_gpu_workload_of_openvla_oft_7b_has_both_cameras_the_state_and_the_slots(tmp_path) -> None:
    from vlx.bench.gpu import recipe_workload, synthetic_batch
    from vlx.bench.models import write_tokenizer

    work = recipe_workload("openvla-oft-7b", write_tokenizer(tmp_path), layers=2, device="meta")
    assert work.trainable == ["projector", "proprio", "head"] and work.model.chunk_size == 8
    batch = synthetic_batch(work.model, 2, "cpu")  # the model is on the meta device; the batch can be read
    length = 1 + 2 * 256 + 1 + 32 + 8 * 7  # BOS, two cameras' patches, the state token, the prompt, the slots
    assert batch["input_ids"].shape == (2, length) and batch["pixel_values"].shape == (2, 2, 6, 224, 224)
    assert batch["state"].shape == (2, 8) and batch["actions"].shape == (2, 8, 7)
    assert batch["action_slots"].sum(1).tolist() == [56, 56] and bool(batch["action_slots"][:, -56:].all())


@pytest.mark.parametrize("argv, message", [
    (["train-step", "--repeats", "0"], "vlx bench train-step: --repeats=0; expected a count ≥ 1"),
    (["gpu", "--tiny", "--layers", "0"], "vlx bench gpu: --layers=0; expected a count ≥ 1"),
])
def test_bad_options_are_one_line_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    from vlx.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *argv])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"vlx bench: error: {message}"


def test_unknown_size_is_a_config_error(tmp_path) -> None:
    from vlx.bench.models import llava_config
    from vlx.errors import ConfigError

    with pytest.raises(ConfigError, match=r"benchmark size 'huge' is unknown; pick one of tiny, small"):
        llava_config("huge", tmp_path)


def test_gpu_measure_handles_bf16_models(tmp_path) -> None:
    """The GPU script's models are bf16 (images arrive as fp32): a tiny bf16 VLA trains and acts on the CPU."""
    from vlx.bench.gpu import Workload, measure
    from vlx.bench.models import build, vla_config, write_tokenizer

    model = build(vla_config("tiny", write_tokenizer(tmp_path))).to(torch.bfloat16)
    result = measure(Workload("bf16 tiny vla", model, ["vision", "projector", "llm"]), batch_size=2, warmup=0,
                     repeats=1, device="cpu")
    assert result["tokens_per_s"] > 0 and result["predict_hz"] > 0
    assert result["mfu"] is None and result["train_memory_gb"] is None  # no peak FLOP/s or CUDA memory on a CPU
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
