"""A model's own level range: recorded in its folder, one warning line for a request outside it, silence
for folders without a record (the published ones)."""

import shutil

import pytest

from text2earth.cli.main import main
from text2earth.core.paths import shipped
from text2earth.models.components import build_from_preset
from text2earth.models.level_range import level_range_warning, read_level_range, record_level_range
from text2earth.pipelines.text2img import Text2EarthPipeline


@pytest.fixture(scope="module")
def published_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("published")
    Text2EarthPipeline.from_components(build_from_preset("tiny")).save_pretrained(folder, safe_serialization=True)
    return folder


def test_record_read_and_warn(published_folder, tmp_path):
    assert read_level_range(published_folder) is None
    assert level_range_warning(published_folder, [18.0, 3.0]) is None  # no record: silent
    folder = shutil.copytree(published_folder, tmp_path / "trained")
    assert record_level_range(folder, {0: 50, 9.678: 10, 13.678: 40, 12.0: 0}) == (9.678, 13.678)
    assert read_level_range(folder) == (9.678, 13.678)
    assert level_range_warning(folder, [9.678, 13.678, 13.7, 12, 0]) is None  # inside (13.7: 9.85 m), 0 = unknown
    assert level_range_warning(folder, [13.8]) is not None
    message = level_range_warning(folder, [18, 12])
    assert "level 18 (0.5 m/px)" in message and "9.678..13.678" in message and "160..10 m/px" in message


def test_the_shipped_demo_model_records_its_range():
    assert read_level_range(shipped("demo")) == (9.678, 13.678)


def test_generate_outside_the_range_warns_once_in_one_line(published_folder, tmp_path, capsys):
    folder = shutil.copytree(published_folder, tmp_path / "trained")
    record_level_range(folder, {9.678: 1, 13.678: 1})
    common = ["--n", "2", "--steps", "1", "--height", "32", "--width", "32", "--model", str(folder)]
    assert main(["generate", "a", "b", "--gsd", "0.5", *common, "--out", str(tmp_path / "fine")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "levels 9.678..13.678" in warnings[0]
    assert main(["generate", "a", "--gsd", "20", *common, "--out", str(tmp_path / "inside")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert (
        main(["generate", "a", "--gsd", "0.5", *common[:-1], str(published_folder), "--out", str(tmp_path / "p")]) == 0
    )
    assert "warning" not in capsys.readouterr().err
