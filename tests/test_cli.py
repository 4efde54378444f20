"""The `text2earth` console script end to end, including its one-line errors."""

import subprocess
import sys

import pytest
from PIL import Image

from text2earth.cli.main import main
from text2earth.io.images import read_png_text
from text2earth.models.components import build_from_preset
from text2earth.pipelines.text2img import Text2EarthPipeline


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    Text2EarthPipeline.from_components(build_from_preset("tiny")).save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_generate(prompts, model_folder, out, n, seed):
    """`text2earth generate` at 10 m, 2 steps, 32 px."""
    args = ["--model", str(model_folder), "--gsd", "10", "--n", str(n), "--seed", str(seed)]
    return main(["generate", *prompts, *args, "--steps", "2", "--height", "32", "--width", "32", "--out", str(out)])


def test_generate_writes_pngs_with_metadata_and_grid(model_folder, tmp_path, capsys):
    out = tmp_path / "gen"
    code = tiny_generate(["cropland fields", "a river"], model_folder, out, n=2, seed=5)
    assert code == 0
    pngs = sorted(out.glob("0*.png"))
    assert len(pngs) == 4
    meta = read_png_text(pngs[3])
    assert meta["prompt"] == "a river" and meta["seed"] == "8" and meta["gsd_m"] == "10"
    assert float(meta["level"]) == pytest.approx(13.678, abs=1e-3)
    grid = Image.open(out / "grid.png")
    assert grid.size[0] >= 64 and grid.size[1] >= 64
    # image i is reproducible on its own from its seed
    code = tiny_generate(["a river"], model_folder, tmp_path / "one", n=1, seed=7)
    assert code == 0
    assert list(Image.open(tmp_path / "one" / "000_L13.6781_seed7.png").getdata()) == list(
        Image.open(pngs[2]).getdata()
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "lcybuaa/Text2Earth", "--level", "17"], "looks like a hub id"),
        (["--model", "/nonexistent/folder", "--level", "17"], "does not exist"),
        (["--level", "30"], "level must lie in"),
        (["--gsd", "-2"], "gsd_m must be a positive"),
        (["--n", "0"], "--n must be at least 1"),
    ],
)
def test_generate_bad_input_is_one_line_exit_2(model_folder, tmp_path, capsys, args, message):
    argv = ["generate", "fields", "--out", str(tmp_path), "--steps", "1", *args]
    if "--model" not in args:
        argv += ["--model", str(model_folder)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


@pytest.mark.slow
def test_console_script_runs_as_a_process(model_folder, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "text2earth.cli.main",
            "generate",
            "fields",
            "--model",
            "hub/id",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("text2earth: error:") and "Traceback" not in proc.stderr


def test_info_prints_the_published_parameter_count(capsys):
    assert main(["info", "--preset", "text2earth_sd2"]) == 0
    assert "1292.0 M" in capsys.readouterr().out


def test_train_config_mistakes_are_one_line(tmp_path, capsys):
    """Composition and instantiation mistakes of `train` end as one line and exit code 2 (the Hydra runner)."""
    run = f"hydra.run.dir={tmp_path}"
    cases = {
        ("experiment=demo_autoencoderr",): "did you mean experiment=demo_autoencoder",
        ("experiment=demo_autoencoder", "trainer.max_step=5", run): "did you mean trainer.max_steps",
        ("experiment=demo_autoencoder", "trainer._target_=nope.Trainer", run): "Error locating target 'nope.Trainer'",
        ("experiment=demo_autoencoder", "trainer=deepspeed", run): "needs the deepspeed package",
    }
    for overrides, expected in cases.items():
        assert main(["train", *overrides]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (overrides, err)


def test_generate_from_png_makes_the_same_pixels(model_folder, tmp_path, capsys):
    """Every setting is recorded in the PNG, and `generate --from` makes that image again, pixel for pixel."""
    out = tmp_path / "gen"
    settings = ["--level", "13.7", "--level-guidance", "6", "--negative", "clouds", "--scheduler", "euler_a"]
    settings += ["--steps", "3", "--guidance", "5.5", "--height", "32", "--width", "48", "--seed", "11"]
    assert (
        main(
            ["generate", "a river", "farmland", "--model", str(model_folder), "--n", "2", *settings, "--out", str(out)]
        )
        == 0
    )
    original = sorted(out.glob("0*.png"))[3]  # the second prompt's second image: seed 14
    meta = read_png_text(original)
    assert meta["prompt"] == "farmland" and meta["negative_prompt"] == "clouds" and meta["seed"] == "14"
    assert (meta["level"], meta["level_guidance"], meta["guidance"]) == ("13.7", "6", "5.5")
    assert (meta["scheduler"], meta["steps"], meta["width"], meta["height"]) == ("euler_a", "3", "48", "32")
    assert meta["model"] == str(model_folder.resolve()) and len(meta["model_sha256"]) == 64
    assert main(["generate", "--from", str(original), "--out", str(tmp_path / "again")]) == 0
    again = next((tmp_path / "again").glob("0*.png"))
    assert Image.open(again).size == (48, 32)
    assert list(Image.open(again).getdata()) == list(Image.open(original).getdata())
    assert read_png_text(again) == meta
