"""Every README figure tagged ``<!-- figure FILE:PATH -->`` equals the value in ``docs/figures/FILE.json``
(written by the make target that measures it, see ``scripts/figures.py``), within the stated tolerance."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from readme import readme_figures

ROOT = Path(__file__).resolve().parents[1]


def _lookup(data, path: str):
    for key in path.split("/"):
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


def test_readme_figures_come_from_the_figure_files():
    figures = readme_figures(ROOT / "README.md")
    assert len(figures) >= 10
    wrong = []
    for fig in figures:
        source = ROOT / "docs" / "figures" / f"{fig.file}.json"
        assert source.is_file(), f"README line {fig.line}: {source} does not exist"
        value = float(_lookup(json.loads(source.read_text()), fig.path)) * fig.scale
        if abs(value - fig.value) > fig.allowed:
            wrong.append(f"README line {fig.line}: shows {fig.shown}, {fig.file}.json {fig.path} is {value:.6g}")
    assert not wrong, "\n".join(wrong)


def test_a_wrong_figure_is_caught(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("| FID | 259.1<!-- figure eval_demo:metrics/fid/fid --> | 42 %<!-- figure x:y ±2% --> |\n")
    first, second = readme_figures(readme)
    assert (first.value, first.file, first.path, first.allowed) == (
        259.1,
        "eval_demo",
        "metrics/fid/fid",
        pytest.approx(0.05),
    )
    assert (second.value, second.allowed) == (42, pytest.approx(0.84))


def _readme_images(readme: Path) -> list[Path]:
    return [readme.parent / p for p in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme.read_text())]


def test_every_image_the_readme_shows_exists_and_decodes():
    # A byte edit of a PNG (a path replaced inside a text chunk) once left one that no viewer opens.
    images = _readme_images(ROOT / "README.md")
    assert len(images) >= 10
    broken = []
    for path in images:
        try:
            with Image.open(path) as im:
                im.load()
        except (OSError, SyntaxError) as exc:
            broken.append(f"{path.relative_to(ROOT)}: {exc}")
    assert not broken, "\n".join(broken)


def test_a_damaged_image_is_caught(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    data = good.read_bytes()
    (tmp_path / "bad.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "README.md").write_text("![a](good.png) ![b](bad.png)\n")
    first, second = _readme_images(tmp_path / "README.md")
    Image.open(first).load()
    with pytest.raises(OSError), Image.open(second) as im:
        im.load()
