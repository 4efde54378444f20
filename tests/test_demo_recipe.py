"""`make demo-train` packages its run with the recipe that made it: a reused autoencoder and the text tower are named."""

import json

import pytest

from scripts.demo_recipe import package

SUMMARY = {"global_step": 30, "wall_s": 12.5, "metrics": {"val/loss": 0.08}, "hardware": "CPU: test"}


def _run(tmp_path, with_autoencoder: bool):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "model_index.json").write_text("{}")
    (run / "unet").mkdir()
    (run / "unet" / "run_summary.json").write_text(json.dumps(SUMMARY))
    if with_autoencoder:
        (run / "autoencoder").mkdir()
        ae = {**SUMMARY, "global_step": 20, "metrics": {"val/psnr": 21.0}}
        (run / "autoencoder" / "run_summary.json").write_text(json.dumps(ae))
    else:
        previous = {"autoencoder": {"steps": 600, "wall_s": 814.5, "metrics": {"val/psnr": 23.3}}}
        (run / "vae_recipe.json").write_text(json.dumps(previous))
    return run


def test_a_reused_autoencoder_and_the_trained_text_tower_are_recorded(tmp_path):
    out = package(
        str(_run(tmp_path, False)), str(tmp_path / "demo"), 600, 30, "weights/rsclip_tiny", "weights/demo/vae"
    )
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["autoencoder"] == {
        "steps": 600,
        "wall_s": 814.5,
        "metrics": {"val/psnr": 23.3},
        "reused_from": "weights/demo/vae",
    }
    assert recipe["command"].endswith("DEMO_TEXT_ENCODER=weights/rsclip_tiny DEMO_VAE=weights/demo/vae")
    assert "text tower of weights/rsclip_tiny" in recipe["weights"]
    assert "reused: weights/demo/vae" in (out / "RECIPE.md").read_text()


def test_a_run_that_trained_its_autoencoder_records_that_run(tmp_path):
    out = package(str(_run(tmp_path, True)), str(tmp_path / "demo"), 20, 30)
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["autoencoder"]["steps"] == 20 and "reused_from" not in recipe["autoencoder"]
    assert "random frozen tiny CLIP text tower" in recipe["weights"]


def test_an_unfinished_run_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="did `make demo-train` finish"):
        package(str(tmp_path), str(tmp_path / "demo"), 600, 30)
