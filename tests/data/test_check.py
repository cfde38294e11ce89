"""Tests of `vlx data check`: every problem of a LLaVA JSON or robomimic HDF5 file is reported, with its kind
and location, instead of stopping at the first; the command prints the summary and exits 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_robomimic_hdf5 import CAMERA, H, W, _spoiled, write_file

from vlx.cli import main
from vlx.data.check import check_llava_json, check_robomimic
from vlx.llm.formats import VicunaFormat

N_IMAGE_TOKENS = 9


def _sample(sample_id: str, question: str = "<image>\nHow many shapes?", answer: str | None = "3",
            image: str | None = "ok.png") -> dict:
    turns = [{"from": "human", "value": question}] + ([{"from": "gpt", "value": answer}] if answer is not None else [])
    return {"id": sample_id, **({"image": image} if image else {}), "conversations": turns}


@pytest.fixture
def broken_json(tmp_path: Path) -> Path:
    """Ten samples: three good, seven with six different problems."""
    Image.new("RGBA", (12, 12), (10, 200, 30, 128)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not an image" * 10)
    records = [
        _sample("good-0"),
        _sample("lost-1", image="missing.png"),
        _sample("lost-2", image="gone/also-missing.png"),
        _sample("corrupt-3", image="bad.png"),
        _sample("noanswer-4", answer=None),
        _sample("nomarker-5", question="How many shapes?"),
        _sample("textmarker-6", image=None),
        _sample("good-7", question="What is this?", image=None),
        {"id": "order-8", "conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "<image>\nq"}],
         "image": "ok.png"},
        _sample("good-9", answer="a green square"),
    ]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


def test_llava_json_check_reports_every_problem_with_file_and_sample(broken_json, tokenizer) -> None:
    report = check_llava_json(broken_json, broken_json.parent, VicunaFormat(), tokenizer, N_IMAGE_TOKENS, 256,
                              on_unanswered="error")
    assert report.checked == 10 and report.unit == "samples"
    assert report.counts() == {"missing-image": 2, "image-marker": 2, "corrupt-image": 1, "no-answer": 1,
                               "turn-order": 1}
    expected = {
        "lost-1": f"image file {broken_json.parent / 'missing.png'} not found",
        "lost-2": "also-missing.png not found",
        "corrupt-3": f"image file {broken_json.parent / 'bad.png'} could not be decoded",
        "noanswer-4": "the last turn is the user's and has no answer (on_unanswered=error",
        "nomarker-5": "found 0 image slots; expected one '<image>' marker",
        "textmarker-6": "found 1 image slots; expected no '<image>' marker (it has no image)",
        "order-8": "turn 0 is from 'assistant'; expected 'user'",
    }
    messages = [str(problem) for problem in report.problems]
    assert len(messages) == len(expected)
    for (sample_id, fragment), message in zip(expected.items(), messages, strict=True):
        assert message.startswith(f"{broken_json}: sample {sample_id}: "), message
        assert fragment in message, message
    lines = report.summary(first=1)
    assert lines[:3] == [f"file={broken_json}", "samples=10", "missing-image: 2"]
    assert lines[3].startswith(f"  {broken_json}: sample lost-1: ") and lines[4] == "  ... and 1 more"
    assert lines[-1] == "problems=7"


def test_llava_json_check_notes_unanswered_conversations_it_skips(broken_json, tokenizer) -> None:
    report = check_llava_json(broken_json, broken_json.parent, VicunaFormat(), tokenizer, N_IMAGE_TOKENS, 256)
    assert "no-answer" not in report.counts() and len(report.problems) == 6
    assert report.notes == [f"{broken_json}: 1 conversation(s) end with a user turn that has no answer: that turn "
                            "dropped in 0, 1 skipped (no answer left); on_unanswered=error stops at them instead"]


def test_llava_json_syntax_error_is_the_single_problem(tmp_path, tokenizer) -> None:
    path = tmp_path / "syntax.json"
    path.write_text('[\n {"id": "a",\n  "conversations": [}\n]\n', encoding="utf-8")
    report = check_llava_json(path, tmp_path, VicunaFormat(), tokenizer, N_IMAGE_TOKENS, 256)
    assert report.counts() == {"json-syntax": 1} and report.checked == 0
    assert str(report.problems[0]).startswith(f"{path}:3:")


def test_clean_llava_json_has_no_problems(shapes, tokenizer) -> None:
    report = check_llava_json(shapes.questions("val"), shapes.image_dir, VicunaFormat(), tokenizer, N_IMAGE_TOKENS, 256)
    assert report.checked == 24 and report.problems == [] and report.summary()[-1] == "problems=0"


def _broken_hdf5(tmp_path: Path) -> Path:
    """The test file of test_robomimic_hdf5 with five problems in three demos and two masks, plus a constant
    action dimension (a note, not a problem)."""
    constant = np.arange(12, dtype=np.float64).reshape(4, 3)
    constant[:, 1] = 0.25
    return write_file(tmp_path / "broken.hdf5", {
        "data/demo_0/actions": np.concatenate([constant, np.zeros((4, 4))], axis=1),  # dims 1, 3..6 constant
        "data/demo_2/actions": _spoiled("demo_2", 1, np.nan),
        "data/demo_10/actions": np.zeros((5, 6)),  # action dim 6 != 7
        CAMERA.format("demo_10"): None,  # and no camera
        "mask/empty": np.array([], "S8"),
        "mask/bad": np.array([b"demo_0", b"demo_7"]),
    })


def test_robomimic_check_reports_every_problem_with_file_and_demo(tmp_path) -> None:
    path = _broken_hdf5(tmp_path)
    report = check_robomimic(path, instruction="pick it up", filter_key="test")
    assert report.checked == 3 and report.unit == "demos"
    assert report.counts() == {"empty-filter-key": 1, "bad-filter-key": 1, "unknown-filter-key": 1,
                               "nonfinite-actions": 1, "missing-camera": 1}
    messages = {problem.kind: str(problem) for problem in report.problems}
    assert messages["nonfinite-actions"].startswith(f"{path}: demo demo_2: 'actions' at step 1 is not finite")
    assert messages["missing-camera"].startswith(f"{path}: demo demo_10: no camera obs/agentview_image")
    assert messages["empty-filter-key"] == (f"{path}: filter key mask/empty lists no demos; expected demo names such "
                                            "as b'demo_0'")
    assert messages["bad-filter-key"] == f"{path}: filter key mask/bad names demos that are not in data/: ['demo_7']"
    assert messages["unknown-filter-key"] == (f"{path}: filter key 'test' (data.filter_key) is not in the file; its "
                                              "mask/ keys are ['bad', 'empty', 'train', 'valid']")
    assert ([note.split("has zero range")[0] for note in report.notes]
            == [f"{path}: 'actions' dim {d} " for d in (1, 3, 4, 5, 6)])
    assert "(q01 == q99 == 0.25); it normalises to 0" in report.notes[0]
    assert "(q01 == q99 == 0); it is not normalised (mask false)" in report.notes[-1]


def test_robomimic_check_finds_disagreeing_demos_and_missing_instructions(tmp_path) -> None:
    path = write_file(tmp_path / "mixed.hdf5", {"data/demo_10/actions": np.zeros((5, 6)),
                                               CAMERA.format("demo_2"): np.zeros((3, H, H, 3), np.uint8)})
    report = check_robomimic(path)  # no instruction: demo_2 has no ep_meta lang
    assert report.counts() == {"no-instruction": 1, "action-dim-mismatch": 1}
    assert [str(p) for p in report.problems][1] == (
        f"{path}: demo demo_10 has action dim 6 but demo demo_0 has 7; every demo must share one action dim")
    report = check_robomimic(path, instruction="lift")
    assert report.counts() == {"action-dim-mismatch": 1, "image-size-mismatch": 1}
    assert f"demo demo_2 has obs/agentview_image image size (H, W) ({H}, {H}) but demo demo_0 has ({H}, {W})" in str(
        report.problems[0])


def test_unreadable_hdf5_is_one_problem(tmp_path) -> None:
    path = tmp_path / "text.hdf5"
    path.write_text("hello", encoding="utf-8")
    report = check_robomimic(path)
    assert report.counts() == {"not-hdf5": 1} and report.checked == 0
    assert write_file(tmp_path / "nodata.hdf5", {"data": None}) and check_robomimic(
        tmp_path / "nodata.hdf5").counts() == {"no-data-group": 1}


def _vlx(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str], str]:
    """Run `vlx data check ARGS` in-process: (exit status, stdout lines, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(["data", "check", *args])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return info.value.code, out.splitlines(), err


def test_cli_prints_the_summary_and_exits_1_on_problems(tmp_path, capsys) -> None:
    status, lines, _ = _vlx(capsys, str(_broken_hdf5(tmp_path)), "--instruction", "lift", "--first", "1")
    assert status == 1
    assert lines[0] == "cameras=agentview_image state_keys=none"
    assert lines[2] == "demos=3" and lines[-1] == "problems=4"
    assert "nonfinite-actions: 1" in lines and "bad-filter-key: 1" in lines
    status, lines, _ = _vlx(capsys, str(write_file(tmp_path / "clean.hdf5")), "--instruction", "lift")
    assert status == 0 and lines[-2:] == ["demos=3", "problems=0"]


def test_cli_checks_llava_json_with_the_recipe_tokenizer(broken_json, tiny_cfg, capsys) -> None:
    status, lines, _ = _vlx(capsys, str(broken_json), "--max-length", "300")
    assert status == 1
    assert lines[:3] == ["stage=finetune prompt=vicuna max_length=300 on_unanswered=skip", f"file={broken_json}",
                         "samples=10"]
    assert "missing-image: 2" in lines and lines[-1] == "problems=6"  # noanswer-4 is skipped, and noted
    assert lines[-2].startswith(f"note: {broken_json}: 1 conversation(s) end with a user turn that has no answer")
    status, _, err = _vlx(capsys, str(broken_json.with_suffix(".txt")))
    assert status == 2
    assert err == f"vlx data: error: {broken_json.with_suffix('.txt')}: no such file; expected a LLaVA .json file, " \
                  "a robomimic .hdf5 file or a LeRobot dataset directory (with meta/info.json)\n"


def test_robomimic_check_covers_every_camera_and_the_state(tmp_path, capsys) -> None:
    from vlx.envs import record_demos

    demos = record_demos(tmp_path / "demos.hdf5", num_demos=10, seed=2).path
    report = check_robomimic(demos, ["agentview_image", "wrist_image"], state_keys=["agent_pos", "gripper"])
    assert report.problems == [] and report.checked == 10
    report = check_robomimic(demos, ["agentview_image", "eye_in_hand"], state_keys=["agent_pos", "joint_pos"])
    assert report.counts() == {"missing-camera": 10}  # each demo stops at its first problem
    report = check_robomimic(demos, ["agentview_image", "wrist_image"], state_keys=["agent_pos", "joint_pos"])
    assert report.counts() == {"missing-state": 10}
    assert "no state obs/joint_pos (data.state_keys[1])" in str(report.problems[0])
    with pytest.raises(SystemExit) as exit_info:  # the recipe's cameras and state keys, and one wrong flag
        main(["data", "check", str(demos), "recipe=openvla-oft-tiny", "--state-key", "agent_pos", "--state-key", "arm"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 1
    assert "cameras=agentview_image,wrist_image state_keys=agent_pos,arm" in out and "missing-state: 10" in out
    main(["data", "check", str(demos), "recipe=openvla-oft-tiny"])
    assert "problems=0" in capsys.readouterr().out
