"""`make gpu-check` in its CPU smoke mode (what CI runs): every figure is produced, the JSON is written."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_gpu_check_smoke_mode_writes_the_table_and_json(tmp_path, capsys):
    from scripts.gpu_check import ANCHORS, main

    out = tmp_path / "gpu_check.json"
    result = main(["--smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "CPU SMOKE" in printed and f"wrote {out}" in printed
    saved = json.loads(out.read_text())
    assert saved["smoke"] and saved["preset"] == "tiny"
    assert saved["parameters_text2earth_sd2"]["unet"] == 867_961_284  # REFERENCE §1: 868.0 M
    for key in ANCHORS:
        assert key in printed
        if key != "train_cached_compile_img_s":  # inductor training compile is GPU-only (minutes on a CPU)
            assert saved[key] > 0, key
    assert saved["fast_recompiles_after_warmup"] == 0
    assert "CUDA graphs" in saved["fast"]["skipped"]
    assert 0 <= saved["bf16_vs_fp32_max_grey_levels"] < 64 and saved["peak_memory_gib"] > 0
    assert result == saved
