"""The `vlx` command as a user runs it: info output, one-line errors, data generation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.subprocess_helpers import run_vlx


def test_info_prints_parameter_lines(tmp_path):
    result = run_vlx("info", "recipe=llava-v1.5-7b", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "params_total=7063427072" in lines
    assert "params_trainable=6759919616" in lines


def test_unknown_registry_name_is_one_line_error(tmp_path):
    result = run_vlx("info", "recipe=llava-tiny", "projector.name=mlpp", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("vlx info: error:")]
    assert error == ["vlx info: error: unknown projector 'mlpp' at config key 'projector.name'. "
                     "Did you mean 'mlp'? Known: fused-mlp, linear, mlp"]


def test_unknown_command_shows_usage(tmp_path):
    result = run_vlx("trian", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown command 'trian'" in result.stderr and "llava-tiny" in result.stderr


def test_data_shapes_writes_llava_json(tmp_path):
    result = run_vlx("data", "shapes", "--out", str(tmp_path / "shapes"), "--n-train", "8", "--n-val", "4",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"questions[val]={tmp_path / 'shapes' / 'qa_val.json'}" in result.stdout
    samples = json.loads((tmp_path / "shapes" / "qa_val.json").read_text())
    assert len(samples) == 4 and samples[0]["conversations"][0]["from"] == "human"


def test_eval_without_checkpoint_explains(tmp_path):
    result = run_vlx("eval", "recipe=llava-tiny", cwd=tmp_path)
    assert result.returncode == 2
    assert "vlx eval: error: vlx eval needs checkpoint=DIR" in result.stderr


def test_bad_dataset_stops_training_with_one_line_naming_file_and_sample(tmp_path, tiny_cfg, vlx_home):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "cat-7", "image": "missing.png",
                                "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                  {"from": "gpt", "value": "a cat"}]}]))
    result = run_vlx(
        "train", "recipe=llava-tiny", f"paths.home={vlx_home}", "logger=none", "train.stages=[finetune]",
        f"stages.finetune.data.train.json_path={bad}", f"stages.finetune.data.train.image_dir={tmp_path}",
        "stages.finetune.data.val=null", cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("vlx train: error:")]
    assert errors == [f"vlx train: error: {bad}: sample cat-7: image file {tmp_path / 'missing.png'} not found "
                      f"(image_dir={tmp_path})"]


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["data", "check", "--help"],
                                  ["data", "metaworld", "--help"], ["train", "--help"],
                                  ["eval", "--help"], ["info", "-h"]], ids=" ".join)
def test_help_answers_without_importing_torch(argv, tmp_path):
    """Help is read often: it must not pay for torch, transformers or Hydra's composition of every group."""
    code = (f"import sys\nfrom vlx.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit as exit:\n"
            "    assert exit.code == 0, exit.code\n"
            "print(sorted({'torch', 'transformers', 'lightning'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    shown = result.stdout + result.stderr
    assert "usage: vlx" in shown
    if argv[0] in ("train", "eval", "info"):
        assert "recipe: flow-vla-tiny, llava-tiny," in shown and "  vision: clip-vit-l," in shown
