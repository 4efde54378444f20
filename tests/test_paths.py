"""Configs and shipped weights are found from any working directory, and from a regular (non-editable) install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from text2earth.core.config import compose_config
from text2earth.core.errors import UserError
from text2earth.core.paths import checkout_root, conf_dir, shipped, weights_dir

ROOT = Path(__file__).resolve().parent.parent


def test_checkout_resolves_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert checkout_root() == ROOT
    assert conf_dir() == ROOT / "conf" and weights_dir() == ROOT / "weights"
    cfg = compose_config("train", ["experiment=inpaint_demo"], output_dir=tmp_path / "run")
    assert Path(cfg.model.components.folder) == ROOT / "weights" / "demo"
    assert Path(cfg.paths.data_dir) == ROOT / "data"  # not tmp_path/data


def test_unknown_shipped_name_is_a_user_error():
    with pytest.raises(UserError, match="shipped: .*demo/lora"):
        shipped("nope")


def test_install_table_lists_every_config_and_weight():
    from scripts.data_files import current, table

    assert current() == table(), "run `python -m scripts.data_files --write` after adding files to conf/ or weights/"


@pytest.mark.slow
def test_regular_install_finds_configs_and_weights(tmp_path):
    """pip install (not editable) into a prefix, then import from there with the cwd elsewhere."""
    # A copy of the source, so the in-tree build (build/, *.egg-info) never touches the checkout.
    source = tmp_path / "source"
    top_junk = {".git", ".venv", "outputs", "data", "logs", "build", "text2earth.egg-info"}
    shutil.copytree(ROOT, source, ignore=lambda d, names: [n for n in names if d == str(ROOT) and n in top_junk])
    prefix = tmp_path / "prefix"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            # Without it pip uninstalls the project from the running environment before installing into the prefix.
            "--ignore-installed",
            "--prefix",
            str(prefix),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    site = next(prefix.glob("lib/python*/site-packages"))
    code = (
        "from text2earth.core.paths import conf_dir, shipped, checkout_root; "
        "from text2earth.core.config import compose_config; "
        "cfg = compose_config('train', ['experiment=inpaint_demo'], output_dir='run'); "
        "print(checkout_root(), conf_dir(), shipped('translate/pan2rgb'), cfg.model.components.folder, sep='\\n')"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("TEXT2EARTH_CONF", None), env.pop("TEXT2EARTH_WEIGHTS", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    root, conf, pan2rgb, folder = out.stdout.split()
    share = prefix / "share" / "text2earth"
    assert root == "None"
    assert Path(conf) == share / "conf" and Path(pan2rgb) == share / "weights" / "translate" / "pan2rgb"
    assert Path(folder) == share / "weights" / "demo"
    assert (Path(pan2rgb) / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    # The environment running the tests keeps its own install (the console script included).
    assert (Path(sys.executable).parent / "text2earth").is_file()


def test_every_shipped_variant_names_a_base_model_that_exists():
    infos = sorted(weights_dir().glob("translate/*/translate.json")) + sorted(
        weights_dir().glob("demo/lora/*/lora.json")
    )
    assert len(infos) >= 5
    for info in infos:
        base = (info.parent / json.loads(info.read_text())["base_model"]).resolve()
        assert base == shipped("demo").resolve(), f"{info}: base_model points at {base}"


def test_ship_variant_re_points_the_relative_base_model(tmp_path):
    from scripts.ship_variant import ship

    base = tmp_path / "weights" / "demo"
    base.mkdir(parents=True)
    export = tmp_path / "outputs" / "run" / "task" / "export"
    export.mkdir(parents=True)
    (export / "translate.json").write_text(json.dumps({"task": "pan2rgb", "base_model": "../../../../weights/demo"}))
    (export / "controlnet").mkdir()
    (export / "controlnet" / "config.json").write_text("{}")
    shipped_to = ship(export, tmp_path / "weights" / "translate" / "pan2rgb")
    info = json.loads((shipped_to / "translate.json").read_text())
    assert info["base_model"] == "../../demo"
    assert (shipped_to / info["base_model"]).resolve() == base.resolve()
    assert (shipped_to / "controlnet" / "config.json").is_file()
    # A copy that kept the export's own relative path would point nowhere.
    assert not (shipped_to / "../../../../weights/demo").resolve().is_dir()


def test_the_shipped_demo_carries_the_current_diffusers_pipeline():
    # Every export writes the asset as pipeline.py (diffusers alone loads the folder with it): a stale copy
    # in the shipped folder would sample differently from this package.
    import text2earth

    asset = Path(text2earth.__file__).parent / "assets" / "diffusers_pipeline.py"
    assert (shipped("demo") / "pipeline.py").read_bytes() == asset.read_bytes()
