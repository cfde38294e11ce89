"""The learning proof, end to end through the `vlx` command: llava-tiny and prismatic-tiny must use the image.

Runs `vlx demo` (tiny assets → shapes data → align → finetune → eval) on a shortened schedule so CI
stays fast, then checks that held-out accuracy clearly beats both the best blind answer and the same
model shown blank images, that the blank-image control stays near chance, that both stages left a
checkpoint and an offline W&B run, and that `vlx eval` on the final checkpoint reproduces the numbers.
The full schedule's numbers (≥ 90 %) are recorded in the README.
"""

from __future__ import annotations

import json

import pytest

from tests.subprocess_helpers import numbers, run_vlx

SHORT_SCHEDULES = {  # recipe: (overrides, required margin over the blind answer, over the blank-image control)
    "llava-tiny": (["shapes.n_train=8000", "shapes.n_val=200", "stages.finetune.epochs=4", "run_name=ci"], 0.25, 0.30),
    # one stage on captions + questions (measured: 0.77 vs blind 0.30, blank 0.19 on one machine; 0.62 vs 0.30 and
    # 0.235 on the AMX one, one thread, where llava-tiny gave 0.60 vs 0.30 and 0.235)
    "prismatic-tiny": (["shapes.n_train=12000", "shapes.n_val=200", "stages.finetune.epochs=3", "run_name=ci"],
                       0.25, 0.30),
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe, stages", [("llava-tiny", ["align", "finetune"]), ("prismatic-tiny", ["finetune"])])
def test_tiny_recipe_learns_to_use_the_image(recipe, stages, tmp_path):
    overrides, over_chance, over_blank = SHORT_SCHEDULES[recipe]
    demo = run_vlx("demo", f"recipe={recipe}", *overrides, cwd=tmp_path, home=tmp_path / "home", timeout=2400,
                   check=True)
    result = numbers(demo.stdout)
    chance, accuracy, blank = result["chance"], result["accuracy"], result["blank_accuracy"]
    assert accuracy >= chance + over_chance, demo.stdout[-2000:]
    assert accuracy >= blank + over_blank, demo.stdout[-2000:]
    assert blank <= chance + 0.10, demo.stdout[-2000:]
    assert result["accuracy[count]"] >= 0.8, demo.stdout[-2000:]

    run = tmp_path / "runs" / "ci"
    for stage in stages:
        assert (run / "checkpoints" / stage / "model.safetensors").is_file()
    offline_runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == len(stages) and all(list(r.glob("*.wandb")) for r in offline_runs)
    finetune_media = offline_runs[-1] / "files" / "media"
    tables = list((finetune_media / "table" / "val").glob("samples_*.table.json"))
    assert tables and json.loads(tables[0].read_text())["columns"] == ["image", "question", "target", "prediction"]
    assert list((finetune_media / "images" / "val").glob("sample_images_*.png"))

    evaluated = run_vlx("eval", f"checkpoint={run / 'checkpoints' / 'finetune'}", "run_name=ci-eval",
                        cwd=tmp_path, home=tmp_path / "home", timeout=2400, check=True)
    again = numbers(evaluated.stdout)
    assert again["accuracy"] == accuracy and again["blank_accuracy"] == blank
