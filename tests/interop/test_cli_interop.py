"""`vlx import` / `vlx export` on the command line: conversions run, mistakes are one line with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_import_then_export_hf_llava(hf_llava_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import load_file

    from vlx.cli import main

    main(["import", "hf-llava", str(hf_llava_dir), str(tmp_path / "ckpt")])
    assert f"vlx import hf-llava: wrote {tmp_path / 'ckpt'}" in capsys.readouterr().out
    assert (tmp_path / "ckpt" / "model.safetensors").is_file() and (tmp_path / "ckpt" / "config.yaml").is_file()
    main(["export", "hf-llava", str(tmp_path / "ckpt"), str(tmp_path / "hf")])
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert "model.multi_modal_projector.linear_1.weight" in exported and "lm_head.weight" in exported


def test_errors_are_one_line_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vlx.cli import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["import", "openvla", str(tmp_path / "empty"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"vlx import: error: {tmp_path / 'empty' / 'config.json'} is missing; an OpenVLA/Prismatic " \
                  "directory has config.json, safetensors weights and tokenizer files"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "openvla", str(tmp_path / "empty"), str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "invalid choice: 'openvla'" in capsys.readouterr().err
